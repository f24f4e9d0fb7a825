"""Faithfulness of an attribution: does removing what a method ranks first change the output?

For one explained output (a :class:`Problem`) and one method's scores over units (words,
sentences, tokens, or any groups of token indices):

- **deletion curve** ``D(k) = F(x without the top-k% units)`` and **insertion curve**
  ``I(k) = F(x with only the top-k% units)`` for ``k`` on :data:`GRID`; ``ceil(k * n / 100)``
  units are taken. F is a direct forward through occlusion's machinery
  (:func:`~headmap.attribution.occlusion.occlusion_scores`): the tokens are taken out of the ids,
  no re-tokenization, special tokens always kept (they are in no unit). ``D(0) = I(100) = F(x)``.
- **AOPC** (Samek et al. 2017): the mean over every grid point, ``k = 0`` included, of the drop
  ``F(x) - D(k)``; higher means the ranking finds what the output depends on sooner.
- **comprehensiveness** ``F(x) - F(x without top-k)`` and **sufficiency** ``F(x) - F(only top-k)``
  (DeYoung et al. 2020, ERASER), each averaged over :data:`ERASER_BINS` (1, 5, 10, 20, 50%).
  Higher comprehensiveness and lower sufficiency are better.
- **LOO agreement**: Spearman's rho between the ranking key and occlusion's per-unit drops.
- a **random** ranking's deletion curve and AOPC (seeded) as the reference a method should beat.

Ranking: unsigned scores (attention, rollout, flow) by magnitude; signed scores (gradients,
occlusion) by value, so a unit that pushes the output down is removed last. Unit scores are the
sum of the unit's token scores, or the method's own word scores when units are words and the
method measures words (occlusion). Units with a NaN score rank last.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from headmap.attribution.agreement import rank_agreement
from headmap.attribution.base import Attribution, Problem
from headmap.attribution.occlusion import occlusion_scores
from headmap.errors import HeadmapError

#: Percentages of units removed (deletion) or kept (insertion).
GRID = (0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100)
#: ERASER's bins for comprehensiveness and sufficiency (percent of units).
ERASER_BINS = (1, 5, 10, 20, 50)
Units = tuple[tuple[int, ...], ...]

_ENDS = (".", "!", "?", "\n")


def make_units(problem: Problem, units: str | Sequence[Sequence[int]] = "words") -> Units:
    """The units as groups of token indices, special tokens (and an explained [MASK]) left out.

    ``"words"``: headmap's word grouping; ``"tokens"``: one token each; ``"sentences"``: runs of
    words up to one ending in ``.``, ``!``, ``?`` or a newline; else the groups given.
    """
    if isinstance(units, str):
        if units == "words":
            raw: list[Sequence[int]] = list(problem.groups)
        elif units == "tokens":
            raw = [(i,) for i in range(problem.n)]
        elif units == "sentences":
            raw, current = [], list[int]()
            for group in problem.groups:
                current.extend(group)
                text = problem.tokens.text[
                    problem.tokens.offsets[group[0]][0] : problem.tokens.offsets[group[-1]][1]
                ]
                if text.rstrip().endswith(_ENDS) or "\n" in text:
                    raw.append(tuple(current))
                    current = []
            if current:
                raw.append(tuple(current))
        else:
            raise HeadmapError(f"unknown units {units!r}: choose words, sentences or tokens, or give groups")
    else:
        raw = [tuple(int(i) for i in u) for u in units]
    fixed = problem.position if problem.target.kind == "masked-token" else -1
    out = [tuple(i for i in u if not problem.tokens.special[i] and i != fixed) for u in raw]
    return tuple(u for u in out if u)


def unit_scores(problem: Problem, attribution: Attribution, units: Units) -> np.ndarray:
    """``[unit]``: the method's own word scores when units are the words and it has them, else
    the sum of the unit's token scores (NaN only when every token is NaN)."""
    if (
        attribution.words is not None
        and units == make_units(problem, "words")
        and len(units) == len(problem.groups)
    ):
        return np.asarray(attribution.words, dtype=np.float64)
    tokens = np.asarray(attribution.tokens, dtype=np.float64)
    out = np.empty(len(units))
    for u, unit in enumerate(units):
        values = tokens[list(unit)]
        out[u] = np.nansum(values) if np.isfinite(values).any() else np.nan
    return out


def ranking_key(scores: np.ndarray, signed: bool) -> np.ndarray:
    """What is ranked: the value (signed) or the magnitude (unsigned)."""
    scores = np.asarray(scores, dtype=np.float64)
    return scores if signed else np.abs(scores)


def order(scores: np.ndarray, signed: bool) -> np.ndarray:
    """Unit indices from the highest key to the lowest (stable; NaN last)."""
    key = ranking_key(scores, signed)
    key = np.where(np.isfinite(key), key, -np.inf)
    return np.argsort(-key, kind="stable")


def count(percent: float, n: int) -> int:
    """How many of ``n`` units ``percent`` % means: ``ceil(percent * n / 100)``."""
    return min(n, int(math.ceil(percent * n / 100 - 1e-9)))


def reduced_outputs(
    problem: Problem, removals: Sequence[Sequence[int]], output: float, batch_size: int = 16
) -> np.ndarray:
    """``F(x without removal)`` for each removal (token indices); an empty removal is ``F(x)``."""
    values = np.full(len(removals), output, dtype=np.float64)
    todo = [(r, tuple(sorted(set(rem)))) for r, rem in enumerate(removals) if len(rem)]
    if todo:
        drops = occlusion_scores(problem, [rem for _, rem in todo], output, batch_size)
        for (r, _), drop in zip(todo, drops):
            values[r] = output - drop
    return values


def curves(
    problem: Problem,
    units: Units,
    ranked: np.ndarray,
    output: float,
    grid: Sequence[float] = GRID,
    batch_size: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """``(deletion, insertion)`` over ``grid`` for the unit order ``ranked``."""
    n = len(units)
    removals_d, removals_i = [], []
    for k in grid:
        top = [i for u in ranked[: count(k, n)] for i in units[u]]
        rest = [i for u in ranked[count(k, n) :] for i in units[u]]
        removals_d.append(top)
        removals_i.append(rest)
    values = reduced_outputs(problem, removals_d + removals_i, output, batch_size)
    return values[: len(grid)], values[len(grid) :]


@dataclass(frozen=True)
class Faithfulness:
    """One method on one text: curves over ``grid``, the summary numbers, and the unit scores."""

    method: str
    signed: bool
    output: float
    grid: tuple[float, ...]
    deletion: np.ndarray
    insertion: np.ndarray
    random_deletion: np.ndarray
    comprehensiveness: float
    sufficiency: float
    loo_spearman: float
    scores: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def aopc(self) -> float:
        return float(np.nanmean(self.output - self.deletion))

    @property
    def random_aopc(self) -> float:
        return float(np.nanmean(self.output - self.random_deletion))

    def summary(self) -> dict[str, float]:
        return {
            "aopc": self.aopc,
            "random_aopc": self.random_aopc,
            "comprehensiveness": self.comprehensiveness,
            "sufficiency": self.sufficiency,
            "loo_spearman": self.loo_spearman,
        }


def eraser(
    problem: Problem,
    units: Units,
    ranked: np.ndarray,
    output: float,
    bins: Sequence[float] = ERASER_BINS,
    batch_size: int = 16,
) -> tuple[float, float]:
    """``(comprehensiveness, sufficiency)`` averaged over ``bins``."""
    deletion, insertion = curves(problem, units, ranked, output, bins, batch_size)
    return float(np.nanmean(output - deletion)), float(np.nanmean(output - insertion))


def measure(
    problem: Problem,
    attribution: Attribution,
    units: Units,
    *,
    output: float | None = None,
    loo: np.ndarray | None = None,
    grid: Sequence[float] = GRID,
    bins: Sequence[float] = ERASER_BINS,
    seed: int = 0,
    batch_size: int = 16,
) -> Faithfulness:
    """Every faithfulness number of one method's ``attribution`` over ``units``.

    ``loo``: occlusion's per-unit drops (computed when None); ``seed``: the random ranking.
    """
    output = problem.output() if output is None else output
    scores = unit_scores(problem, attribution, units)
    ranked = order(scores, attribution.signed)
    deletion, insertion = curves(problem, units, ranked, output, grid, batch_size)
    rng = np.random.default_rng(seed)
    random_deletion, _ = curves(problem, units, rng.permutation(len(units)), output, grid, batch_size)
    comp, suff = eraser(problem, units, ranked, output, bins, batch_size)
    if loo is None:
        loo = occlusion_scores(problem, units, output, batch_size)
    rho = rank_agreement(ranking_key(scores, attribution.signed), loo)[0]
    return Faithfulness(
        attribution.method,
        attribution.signed,
        output,
        tuple(float(k) for k in grid),
        deletion,
        insertion,
        random_deletion,
        comp,
        suff,
        float(rho),
        scores,
        {"units": len(units)},
    )


def bootstrap(
    values: Sequence[float], n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of the finite values and its percentile bootstrap interval."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(x.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))
