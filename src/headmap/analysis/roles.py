"""Labelling heads from their corpus statistics, with fixed, documented thresholds.

The thresholds are the same for every model (no tuning per model); :data:`THRESHOLDS` holds them
and :func:`describe_thresholds` is what reports print. A head gets the first role whose test it
passes, in the order of :data:`ROLE_ORDER` (the positional patterns are the most specific, so they
come first), and ``"mixed"`` when it passes none.

A role describes where a head looks on average over the corpus, nothing more: attention is
correlation, not causation, and the same pattern means different things at different depths.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


@dataclass(frozen=True)
class RoleThresholds:
    """Each threshold with where it comes from (``<name>_source``)."""

    previous: float = 0.5
    previous_source: str = (
        "more than half of the head's attention on the previous token: the positional heads "
        "Clark et al. 2019 (sec. 3, relative position) find in BERT"
    )
    next: float = 0.5
    next_source: str = (
        "more than half on the next token: the mirror pattern, same source (Clark et al. 2019, sec. 3)"
    )
    diagonal: float = 0.5
    diagonal_source: str = (
        "more than half on the query token itself (Clark et al. 2019 measure attention to the "
        "current token; the half is headmap's convention, as for previous/next)"
    )
    sink: float = 0.3
    sink_source: str = "first-token share above 0.3, the attention-sink criterion of Gu et al. 2025"
    special: float = 0.5
    special_source: str = (
        "more than half on special tokens ([CLS], [SEP], BOS): Clark et al. 2019 (sec. 3) report "
        "over half of BERT's attention in layers 6-10 on [SEP]"
    )
    broad: float = 0.78
    broad_source: str = (
        "normalized entropy above 0.78: Clark et al. 2019 call heads above 3.8 nats broad at "
        "n ~ 128 tokens, and 3.8 / log(128) = 0.78"
    )
    local: float = 2.0
    local_source: str = (
        "mean attention distance of at most 2 tokens: headmap's convention for heads that stay "
        "within the +-2 neighbourhood of the positional heads above (no published cut-off)"
    )


THRESHOLDS = RoleThresholds()

#: Roles in the order they are tested; the statistic each reads and the comparison.
ROLE_ORDER: tuple[tuple[str, str, str], ...] = (
    ("previous-token", "prev_share", "previous"),
    ("next-token", "next_share", "next"),
    ("diagonal", "diag_share", "diagonal"),
    ("first-token sink", "first_share", "sink"),
    ("special-token", "special_share", "special"),
    ("broad", "entropy_norm", "broad"),
    ("local", "distance", "local"),
)
MIXED = "mixed"
ROLES = (*(name for name, _, _ in ROLE_ORDER), MIXED)


def _passes(stat: str, value: np.ndarray, threshold: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        # NaN (undefined, e.g. distances of cross-attention) passes no test.
        return value <= threshold if stat == "distance" else value > threshold


def assign_roles(means: dict[str, np.ndarray], thresholds: RoleThresholds = THRESHOLDS) -> np.ndarray:
    """An array of role names shaped like the statistics (``[layer, head]``)."""
    shape = next(iter(means.values())).shape
    out = np.full(shape, MIXED, dtype=object)
    open_ = np.ones(shape, dtype=bool)
    for role, stat, attr in ROLE_ORDER:
        if stat not in means:
            continue
        hit = open_ & _passes(stat, np.asarray(means[stat], dtype=np.float64), getattr(thresholds, attr))
        out[hit] = role
        open_ &= ~hit
    return out


def describe_thresholds(thresholds: RoleThresholds = THRESHOLDS) -> list[str]:
    """One line per role: the test and its source, in the order roles are tested."""
    lines = []
    for role, stat, attr in ROLE_ORDER:
        sign = "<=" if stat == "distance" else ">"
        lines.append(
            f"{role}: {stat} {sign} {getattr(thresholds, attr):g} ({getattr(thresholds, attr + '_source')})"
        )
    lines.append(f"{MIXED}: none of the above")
    return lines


def threshold_values(thresholds: RoleThresholds = THRESHOLDS) -> dict[str, float]:
    return {f.name: getattr(thresholds, f.name) for f in fields(thresholds) if not f.name.endswith("_source")}


__all__ = [
    "MIXED",
    "ROLES",
    "ROLE_ORDER",
    "THRESHOLDS",
    "RoleThresholds",
    "assign_roles",
    "describe_thresholds",
]
