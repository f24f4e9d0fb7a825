"""Paired statistics over counterfactual pairs, for one quantity or for every head at once.

For pairs ``p`` with values ``x_p`` (group A's prompt) and ``y_p`` (group B's), the differences
``d_p = x_p - y_p`` give:

- the mean difference ``mean(d)`` and its standard deviation ``sd(d)`` (``ddof=1``);
- the paired t-test (``scipy.stats.ttest_rel(x, y)``, two-sided) and the Wilcoxon signed-rank test
  (``scipy.stats.wilcoxon(d)``: two-sided, zero differences dropped, exact below 50 pairs without
  ties, else the normal approximation: scipy's defaults);
- Cohen's ``d_z = mean(d) / sd(d)``;
- a percentile bootstrap interval for ``mean(d)``: ``rng = numpy.random.default_rng(seed)``,
  resample indices ``rng.integers(0, n, size=(resamples, n))`` (drawn in chunks, the same numbers),
  each resample's mean, and the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of
  those means (``numpy.percentile``, linear interpolation). All columns of one call share the
  resamples.

Many heads tested at once are corrected with Benjamini-Hochberg
(``scipy.stats.false_discovery_control(p, method="bh")``) over the heads with a defined p-value.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from headmap.errors import HeadmapError

#: Bootstrap resamples drawn per chunk: bounds memory to chunk x pairs integers.
_CHUNK = 1000


@dataclass(frozen=True)
class PairedStats:
    """The paired comparison of one quantity (see the module docstring); ``mean`` is ``mean(x - y)``."""

    n: int
    mean_x: float
    mean_y: float
    mean: float
    sd: float
    t: float
    t_p: float
    wilcoxon: float
    wilcoxon_p: float
    d_z: float
    ci_low: float
    ci_high: float
    confidence: float
    resamples: int
    seed: int

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()
        }

    def describe(self, unit: str = "") -> str:
        """``+0.123 (95% CI [+0.01, +0.20]; t-test p = 0.03, Wilcoxon p = 0.04; d_z = 0.51; 20 pairs)``."""
        return (
            f"{self.mean:+.4g}{unit} ({self.confidence:.0%} CI [{self.ci_low:+.4g}, {self.ci_high:+.4g}]; "
            f"paired t-test p = {_p(self.t_p)}, Wilcoxon p = {_p(self.wilcoxon_p)}; d_z = {self.d_z:+.2f}; "
            f"{self.n} pairs)"
        )


def _p(value: float) -> str:
    return "n/a" if not math.isfinite(value) else (f"{value:.2g}" if value < 0.001 else f"{value:.3f}")


def bootstrap_means(d: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """``[resample, column]``: the mean of each bootstrap resample of the rows of ``d`` ``[pair, column]``.

    A resample's mean is its row counts times ``d`` over ``n`` (one matrix product per chunk instead
    of gathering ``resamples x n x columns`` values).
    """
    n = d.shape[0]
    rng = np.random.default_rng(seed)
    out = np.empty((resamples, d.shape[1]), dtype=np.float64)
    for first in range(0, resamples, _CHUNK):
        size = min(_CHUNK, resamples - first)
        idx = rng.integers(0, n, size=(size, n))
        counts = np.bincount((idx + n * np.arange(size)[:, None]).ravel(), minlength=size * n).reshape(
            size, n
        )
        out[first : first + size] = counts @ d / n
    return out


def paired_columns(
    x: np.ndarray, y: np.ndarray, resamples: int = 10_000, seed: int = 0, confidence: float = 0.95
) -> dict[str, np.ndarray]:
    """Every statistic of the module docstring for each column of ``x``, ``y`` ``[pair, column]``."""
    from scipy.stats import ttest_rel, wilcoxon

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"x and y must be [pair, column] of one shape, not {x.shape} and {y.shape}")
    n = x.shape[0]
    if n < 2:
        raise HeadmapError(f"paired statistics need at least 2 pairs, not {n}: give more names or --pairs")
    if not 0 < confidence < 1:
        raise HeadmapError(f"the confidence level must lie between 0 and 1, not {confidence}")
    if resamples < 1:
        raise HeadmapError(f"the bootstrap needs at least 1 resample, not {resamples}")
    d = x - y
    mean = d.mean(axis=0)
    sd = d.std(axis=0, ddof=1)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter(
            "ignore", RuntimeWarning
        )  # constant differences: scipy says so, NaN/inf says it too
        t = ttest_rel(x, y, axis=0)
        d_z = mean / sd
        w_stat, w_p = np.full(d.shape[1], np.nan), np.full(d.shape[1], np.nan)
        for c in range(d.shape[1]):
            if np.any(d[:, c] != 0):  # all differences zero: nothing to rank, no test
                result = wilcoxon(d[:, c])
                w_stat[c], w_p[c] = float(result.statistic), float(result.pvalue)
    boots = bootstrap_means(d, resamples, seed)
    low, high = np.percentile(boots, [50 * (1 - confidence), 50 * (1 + confidence)], axis=0)
    return {
        "mean_x": x.mean(axis=0),
        "mean_y": y.mean(axis=0),
        "mean": mean,
        "sd": sd,
        "t": np.asarray(t.statistic, dtype=np.float64),
        "t_p": np.asarray(t.pvalue, dtype=np.float64),
        "wilcoxon": w_stat,
        "wilcoxon_p": w_p,
        "d_z": d_z,
        "ci_low": low,
        "ci_high": high,
    }


def paired(
    x: np.ndarray, y: np.ndarray, resamples: int = 10_000, seed: int = 0, confidence: float = 0.95
) -> PairedStats:
    """:class:`PairedStats` of ``x`` against ``y`` ``[pair]``."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    cols = paired_columns(x[:, None], y[:, None], resamples, seed, confidence)
    return PairedStats(
        n=len(x),
        confidence=confidence,
        resamples=resamples,
        seed=seed,
        **{k: float(v[0]) for k, v in cols.items()},
    )


def bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q) of ``p``, over its finite entries (NaN stays NaN)."""
    from scipy.stats import false_discovery_control

    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        q[finite] = false_discovery_control(p[finite], method="bh")
    return q
