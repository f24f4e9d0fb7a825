"""How far attribution methods agree: rank correlations between every pair, over the same units.

Spearman's rho and Kendall's tau-b (scipy) over the units both methods scored, restricted to the
units the explained output can depend on, special tokens left out (attention piles onto them as
sinks, and IG's baseline keeps them, so they would only measure that convention). Signed scores
are compared as they are; ``absolute`` compares magnitudes, which is fairer to attention, since
it cannot say that a word pushes the output down. Agreement with occlusion, the causal
reference, is "how causal is this picture".
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

REFERENCE = "occlusion"
COLUMNS = (
    "method_a",
    "method_b",
    "spearman",
    "kendall",
    "spearman_abs",
    "kendall_abs",
    "n",
    "with_occlusion",
)


def rank_agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float, int]:
    """``(spearman, kendall, n)`` over the positions where both are finite; NaN below 3 points or
    when either side is constant there (no ranking to compare)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    n = int(both.sum())
    if n < 3 or np.ptp(a[both]) == 0 or np.ptp(b[both]) == 0:
        return float("nan"), float("nan"), n
    from scipy.stats import kendalltau, spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = float(spearmanr(a[both], b[both]).statistic)
        tau = float(kendalltau(a[both], b[both]).statistic)
    return rho, tau, n


def ordered(methods: list[str]) -> list[str]:
    """Methods in their given order, with the reference (occlusion) last."""
    return [m for m in methods if m != REFERENCE] + [m for m in methods if m == REFERENCE]


def agreement_table(scores: Mapping[str, np.ndarray], include: np.ndarray) -> pd.DataFrame:
    """One row per pair of methods: signed and absolute Spearman and Kendall over ``include``d units."""
    import pandas as pd

    names = ordered(list(scores))
    rows = []
    for a, b in itertools.combinations(names, 2):
        sa = np.where(include, scores[a], np.nan)
        sb = np.where(include, scores[b], np.nan)
        rho, tau, n = rank_agreement(sa, sb)
        rho_abs, tau_abs, _ = rank_agreement(np.abs(sa), np.abs(sb))
        rows.append((a, b, rho, tau, rho_abs, tau_abs, n, REFERENCE in (a, b)))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def causal_agreement(table: pd.DataFrame) -> pd.DataFrame:
    """Each method's agreement with occlusion (rows of ``table`` that pair a method with it)."""
    picked = table.loc[table["with_occlusion"].astype(bool).to_numpy()]
    out = picked.assign(
        method=np.where(picked["method_a"] == REFERENCE, picked["method_b"], picked["method_a"])
    )
    return out[["method", "spearman", "kendall", "spearman_abs", "kendall_abs", "n"]].reset_index(drop=True)
