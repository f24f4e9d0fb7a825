"""What the pruning cut: the record of the cut model, and the curve helpers the page and the figure share.

Kept apart from :mod:`headmap.apps.prune.report` so the page and the figure use them without
importing the report (which imports them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from headmap.apps.prune.physical import Latency
from headmap.models.pruned import HeadLayout
from headmap.render.report import json_number
from headmap.result import LayerKey

if TYPE_CHECKING:
    from headmap.apps.prune.quality import Metric
    from headmap.apps.prune.report import PruneReport

KEEP = 0.9  # bertology's stop rule: quality within 90% of the unpruned model's


@dataclass(frozen=True)
class Pruning:
    """The heads cut from the model and what the cut model measured."""

    order: str
    amount: float
    removed: tuple[tuple[str, int], ...]  # (layer name, head) in the unpruned model's numbering
    layouts: tuple[HeadLayout, ...]
    quality: dict[str, float]  # the cut model on the held-out texts
    parameters_before: int
    parameters_after: int
    kv_heads_before: int
    kv_heads_after: int
    max_difference: float  # cut vs gated outputs (logits or last hidden state), held-out texts
    output_scale: float  # largest |output| of the gated model there
    latency: Latency | None
    folder: str | None

    @property
    def heads_after(self) -> int:
        return sum(len(layout.query) for layout in self.layouts)


def pruning_record(p: Pruning) -> dict[str, Any]:
    """What ``headmap_pruning.json`` and the report's JSON say about the cut."""
    removed: dict[str, list[int]] = {}
    for layer, head in p.removed:
        removed.setdefault(layer, []).append(head)
    return {
        "order": p.order,
        "amount": p.amount,
        "heads_removed": len(p.removed),
        "heads_after": p.heads_after,
        "removed": {
            k: sorted(v) for k, v in sorted(removed.items(), key=lambda kv: LayerKey.parse(kv[0]).sort_key)
        },
        "removal_order": [[layer, head] for layer, head in p.removed],
        "layouts": [layout.to_json() for layout in p.layouts],
        "quality": {k: json_number(v) for k, v in p.quality.items()},
        "parameters_before": p.parameters_before,
        "parameters_after": p.parameters_after,
        "kv_heads_before": p.kv_heads_before,
        "kv_heads_after": p.kv_heads_after,
        "max_difference_vs_gated": json_number(p.max_difference),
        "output_scale": json_number(p.output_scale),
        "latency": None
        if p.latency is None
        else {
            "before_s": list(p.latency.before),
            "after_s": list(p.latency.after),
            "median_before_s": p.latency.median_before,
            "median_after_s": p.latency.median_after,
            "batch": p.latency.batch,
            "tokens": p.latency.tokens,
        },
        "folder": p.folder,
    }


def mean_random(report: PruneReport, metric: Metric) -> tuple[tuple[int, ...], np.ndarray] | None:
    """``(counts, mean over seeds)`` of the random orders' ``metric``, or None without random orders.

    Perplexities are averaged geometrically (the exp of the mean per-token loss): one seed's blow-up
    to 10^5 would otherwise hide the others.
    """
    curves = [c for c in report.curves if c.order.name == "random"]
    if not curves:
        return None
    values = np.array([c.values[metric.name] for c in curves], dtype=np.float64)
    if metric.name == "perplexity":
        return curves[0].counts, np.exp(np.log(values).mean(axis=0))
    return curves[0].counts, values.mean(axis=0)


__all__ = ["KEEP", "Pruning", "mean_random", "pruning_record"]
