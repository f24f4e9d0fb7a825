"""Labelling heads from their corpus statistics, with fixed, documented thresholds.

The thresholds are the same for every model (no tuning per model); :data:`THRESHOLDS` holds them
and :func:`describe_thresholds` is what reports print. Each role is a :class:`Role` record (its
statistic, threshold, direction and citation). A head gets the first role whose test it passes, in
the order of :data:`ROLE_ORDER` (the positional patterns are the most specific, so they come
first), and ``"mixed"`` when it passes none.

A role describes where a head looks on average over the corpus, nothing more: attention is
correlation, not causation, and the same pattern means different things at different depths.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass

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


class Direction(enum.Enum):
    """How a statistic is compared with its threshold."""

    ABOVE = ">"  # the statistic must exceed the threshold
    AT_MOST = "<="  # the statistic must not exceed it (distances: small means local)


@dataclass(frozen=True)
class Role:
    """One role's test: ``statistic`` compared with ``threshold`` in ``direction``, and its source."""

    name: str
    statistic: str
    threshold: float
    direction: Direction
    citation: str

    def passes(self, values: np.ndarray) -> np.ndarray:
        """Booleans shaped like ``values`` (``[layer, head]``); NaN passes no test."""
        with np.errstate(invalid="ignore"):
            # NaN (undefined, e.g. distances of cross-attention) compares False either way.
            if self.direction is Direction.AT_MOST:
                return np.asarray(values <= self.threshold)
            return np.asarray(values > self.threshold)

    def describe(self) -> str:
        """``"broad: entropy_norm > 0.78 (source)"``."""
        return f"{self.name}: {self.statistic} {self.direction.value} {self.threshold:g} ({self.citation})"


def role_tests(thresholds: RoleThresholds = THRESHOLDS) -> tuple[Role, ...]:
    """The roles in the order they are tested, with ``thresholds``' values and sources."""
    t = thresholds
    return (
        Role("previous-token", "prev_share", t.previous, Direction.ABOVE, t.previous_source),
        Role("next-token", "next_share", t.next, Direction.ABOVE, t.next_source),
        Role("diagonal", "diag_share", t.diagonal, Direction.ABOVE, t.diagonal_source),
        Role("first-token sink", "first_share", t.sink, Direction.ABOVE, t.sink_source),
        Role("special-token", "special_share", t.special, Direction.ABOVE, t.special_source),
        Role("broad", "entropy_norm", t.broad, Direction.ABOVE, t.broad_source),
        Role("local", "distance", t.local, Direction.AT_MOST, t.local_source),
    )


#: The roles with the default thresholds, in the order they are tested.
ROLE_ORDER: tuple[Role, ...] = role_tests(THRESHOLDS)
MIXED = "mixed"
ROLES = (*(role.name for role in ROLE_ORDER), MIXED)


def assign_roles(means: dict[str, np.ndarray], thresholds: RoleThresholds = THRESHOLDS) -> np.ndarray:
    """An array of role names shaped like the statistics (``[layer, head]``)."""
    shape = next(iter(means.values())).shape
    out = np.full(shape, MIXED, dtype=object)
    open_ = np.ones(shape, dtype=bool)
    for role in role_tests(thresholds):
        if role.statistic not in means:
            continue
        hit = open_ & role.passes(np.asarray(means[role.statistic], dtype=np.float64))
        out[hit] = role.name
        open_ &= ~hit
    return out


def describe_thresholds(thresholds: RoleThresholds = THRESHOLDS) -> list[str]:
    """One line per role: the test and its source, in the order roles are tested."""
    return [*(role.describe() for role in role_tests(thresholds)), f"{MIXED}: none of the above"]


def threshold_values(thresholds: RoleThresholds = THRESHOLDS) -> dict[str, float]:
    """The threshold values by name (``{"previous": 0.5, ...}``), without their sources."""
    return {name: value for name, value in asdict(thresholds).items() if not name.endswith("_source")}


__all__ = [
    "MIXED",
    "Direction",
    "Role",
    "ROLES",
    "ROLE_ORDER",
    "THRESHOLDS",
    "RoleThresholds",
    "assign_roles",
    "describe_thresholds",
    "role_tests",
    "threshold_values",
]
