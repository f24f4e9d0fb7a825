"""Quality against the share of heads removed, for each removal order, with the heads gated off.

Each step removes the first ``n`` heads of an order with ``headmap.ablate(model, heads, mode="zero")``
(the cut model computes the same, see :mod:`headmap.apps.prune.physical`) and measures the held-out
quality. Step 0 is the unpruned model, measured once and shared by every order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from headmap.analysis.ablation import ablate
from headmap.apps.prune.order import Order
from headmap.apps.prune.quality import Quality


@dataclass(frozen=True)
class Curve:
    """One order's quality at every step: ``values[metric][i]`` with ``counts[i]`` heads removed."""

    order: Order
    counts: tuple[int, ...]
    values: dict[str, tuple[float, ...]]


def measure_step(quality: Quality, order: Order, count: int) -> dict[str, float]:
    """The quality with the first ``count`` heads of ``order`` gated off."""
    if count == 0:
        return quality.measure()
    with ablate(quality.loaded, list(order.heads[:count]), mode="zero"):
        return quality.measure()


def measure_curve(
    quality: Quality,
    order: Order,
    counts: Sequence[int],
    baseline: dict[str, float],
    on_step: Callable[[], None] | None = None,
) -> Curve:
    """``order``'s curve over ``counts`` (``counts[0] == 0`` takes ``baseline``)."""
    rows = []
    for count in counts:
        rows.append(baseline if count == 0 else measure_step(quality, order, count))
        if on_step is not None and count:
            on_step()
    values = {metric.name: tuple(float(r[metric.name]) for r in rows) for metric in quality.metrics}
    return Curve(order, tuple(counts), values)


def tolerated(curve: Curve, metric: str, higher_is_better: bool, keep: float = 0.9) -> int:
    """The most heads removed, at a step, while quality stays within ``keep`` of the unpruned model's
    at that step and every one before it (bertology's stop rule: 90% of the original score).

    For a metric that is better lower (perplexity) "within" means at most ``original / keep``.
    """
    values = curve.values[metric]
    base = values[0]
    best = 0
    for count, value in zip(curve.counts, values):
        ok = value >= keep * base if higher_is_better else value <= base / keep
        if not ok:
            break
        best = count
    return best


def kept_share(value: float, base: float, higher_is_better: bool) -> float:
    """How much of the unpruned quality ``base`` a pruned ``value`` keeps, on the scale of the 90% rule:
    ``value / base``, or ``base / value`` for a metric that is better lower (perplexity)."""
    return value / base if higher_is_better else base / value


__all__ = ["Curve", "kept_share", "measure_curve", "measure_step", "tolerated"]
