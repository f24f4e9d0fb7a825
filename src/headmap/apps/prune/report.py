"""The result of ``headmap prune``: quality curves per removal order, and the physically cut model.

Every number printed, drawn or saved comes from the fields held here: the curves' measured values
and the cut model's measured parameters, latency and output difference.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from headmap.apps.prune.curve import Curve, kept_share, tolerated
from headmap.apps.prune.figure import curve_figure
from headmap.apps.prune.order import Order
from headmap.apps.prune.page import report_body
from headmap.apps.prune.physical import Latency
from headmap.apps.prune.pruning import KEEP, Pruning, pruning_record
from headmap.apps.prune.quality import Metric
from headmap.errors import HeadmapError
from headmap.models.pruned import HeadLayout
from headmap.render.report import Report, deprecated_alias, json_number
from headmap.result import CAUSATION_WARNING, LayerKey

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

FORMAT = "headmap-prune/1"


@dataclass(frozen=True, eq=False)
class PruneReport(Report):
    """Quality vs heads removed for each order (``curves``), and the cut model (``pruning``) if asked.

    ``heads_per_layer`` and ``layers`` describe the unpruned model; ``baseline`` is its quality.
    """

    model: str
    layers: tuple[str, ...]
    heads_per_layer: int
    step: float
    texts: str
    n_texts: int
    heldout: str
    n_heldout: int
    loss: str
    metrics: tuple[Metric, ...]
    baseline: dict[str, float]
    curves: tuple[Curve, ...]
    pruning: Pruning | None = None
    notes: tuple[str, ...] = ()
    interrupted: bool = False

    tabular = True  # to_pandas() is the table: .parquet is written too

    @property
    def total_heads(self) -> int:
        return len(self.layers) * self.heads_per_layer

    @property
    def primary(self) -> Metric:
        return self.metrics[0]

    @property
    def table(self) -> pd.DataFrame:
        """One row per order and step: heads removed, their share, and every metric."""
        import pandas as pd

        rows = []
        for curve in self.curves:
            for i, count in enumerate(curve.counts):
                row = {
                    "order": curve.order.name,
                    "seed": curve.order.seed,
                    "heads_removed": count,
                    "share_removed": count / self.total_heads,
                }
                row.update({m.name: curve.values[m.name][i] for m in self.metrics})
                rows.append(row)
        return pd.DataFrame(rows).astype({"seed": "Int64"})

    def tolerated(self) -> dict[str, float]:
        """Per order: the largest share removed at a step while the primary metric stays within 90%
        of the unpruned model's (perplexity: at most 1/0.9 of it), bertology's stop rule."""
        m = self.primary
        return {
            c.order.label: tolerated(c, m.name, m.higher_is_better, KEEP) / self.total_heads
            for c in self.curves
        }

    @property
    def summary(self) -> list[str]:
        """Plain sentences: the baseline, what each order tolerates, the cut model."""
        m = self.primary
        lines = [
            f"{self.model}: {len(self.layers)} layers x {self.heads_per_layer} heads; unpruned {m.label} "
            f"{self.baseline[m.name]:.4g} on {self.n_heldout} held-out texts."
        ]
        if self.curves:
            lines.append(self._measured_line())
        p = self.pruning
        if p is not None:
            lines.append(
                f"Cut {len(p.removed)} of {self.total_heads} heads ({p.amount:.0%}, {p.order} order): {m.label} "
                f"{p.quality[m.name]:.4g}; parameters {p.parameters_before:,} -> {p.parameters_after:,} "
                f"(-{1 - p.parameters_after / p.parameters_before:.2%}); cut vs gated outputs differ by at most "
                f"{p.max_difference:.2g} (outputs up to {p.output_scale:.3g})."
            )
            if p.latency is not None:
                lines.append(
                    f"Latency, median of {len(p.latency.before)} forwards of {p.latency.batch} texts "
                    f"({p.latency.tokens} tokens each): {p.latency.median_before * 1e3:.1f} ms -> "
                    f"{p.latency.median_after * 1e3:.1f} ms (x{p.latency.speedup:.2f})."
                )
        return lines

    def _measured_line(self) -> str:
        """What the curves measured: the share each order tolerates, claimed only over the steps measured."""
        m, total = self.primary, self.total_heads
        steps = [c for c in self.curves[0].counts if c]
        if not steps:
            return "No step removed a head (the amount is less than one head), so nothing was measured."
        if len(steps) == 1:
            base = self.baseline[m.name]
            kept = {
                c.order.label: kept_share(c.values[m.name][-1], base, m.higher_is_better) for c in self.curves
            }
            how = "" if m.higher_is_better else " (unpruned / pruned, as it is better lower)"
            return (
                f"At the one step measured ({steps[0] / total:.0%} of heads removed), each order keeps this "
                f"share of the unpruned {m.label}{how}: {_by_order(self.curves, kept)}. No larger share was "
                f"measured, so how many heads can go within {KEEP:.0%} is not known: measure the curve (--curve)."
            )
        shares = self.tolerated()
        largest = {c.order.label: c.counts[-1] / total for c in self.curves}
        named = {
            label: f"{share:.0%}"
            + (f" (within {KEEP:.0%} at every step measured)" if share == largest[label] else "")
            for label, share in shares.items()
        }
        return (
            f"Largest share removed with {m.label} within {KEEP:.0%} of the unpruned value, over the steps "
            f"measured (up to {max(largest.values()):.0%} of heads): {_by_order(self.curves, named)}."
        )

    @property
    def caveats(self) -> list[str]:
        return [
            "Heads are removed without any fine-tuning afterwards; the quality is measured on held-out text the "
            "orders never saw.",
            "The importance order is causal (gradients of the loss through each head's gate, Michel et al. 2019); "
            "the entropy order reads attention only, and the curve is the test of it.",
            CAUSATION_WARNING,
        ]

    def to_dict(self) -> dict[str, Any]:
        p = self.pruning
        return {
            "format": FORMAT,
            "model": self.model,
            "layers": list(self.layers),
            "heads_per_layer": self.heads_per_layer,
            "total_heads": self.total_heads,
            "step": self.step,
            "texts": self.texts,
            "n_texts": self.n_texts,
            "heldout": self.heldout,
            "n_heldout": self.n_heldout,
            "importance_loss": self.loss,
            "metrics": [
                {"name": m.name, "label": m.label, "higher_is_better": m.higher_is_better}
                for m in self.metrics
            ],
            "baseline": {k: json_number(v) for k, v in self.baseline.items()},
            "curves": [
                {
                    "order": c.order.name,
                    "seed": c.order.seed,
                    "heads_removed": list(c.counts),
                    "values": {k: [json_number(x) for x in v] for k, v in c.values.items()},
                    "removal_order": [[layer, head] for layer, head in _named(c.order.heads)],
                }
                for c in self.curves
            ],
            "tolerated_share": {k: json_number(v) for k, v in self.tolerated().items()},
            "largest_share_measured": {c.order.label: c.counts[-1] / self.total_heads for c in self.curves},
            "pruning": None if p is None else pruning_record(p),
            "interrupted": self.interrupted,
            "notes": list(self.notes),
            "caveats": self.caveats,
        }

    def to_pandas(self) -> pd.DataFrame:
        """:attr:`table`: one row per order and step."""
        return self.table

    def figure(self, **options: Any) -> Figure:
        """Quality vs share of heads removed, one line per order (random: each seed, and their mean)."""
        return curve_figure(self)

    def page(self, **options: Any) -> str:
        """The report as one self-contained HTML fragment: summary, curve (inline PNG), tables, caveats."""
        return report_body(self)

    def _title(self) -> str:
        return f"{self.model} · head pruning"

    render = deprecated_alias("save", "render")
    plot_curve = deprecated_alias("figure", "plot_curve")


def read_report(path: str | Path) -> PruneReport:
    """A report saved as JSON (:meth:`PruneReport.save`), to draw or save again without recomputing."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HeadmapError(f"cannot read {path}: {exc}") from None
    if data.get("format") != FORMAT:
        raise HeadmapError(f"{path} is not a headmap pruning report ({FORMAT})")
    nan = float("nan")
    curves = tuple(
        Curve(
            Order(
                c["order"], tuple((LayerKey.parse(k), int(h)) for k, h in c["removal_order"]), seed=c["seed"]
            ),
            tuple(c["heads_removed"]),
            {k: tuple(nan if x is None else x for x in v) for k, v in c["values"].items()},
        )
        for c in data["curves"]
    )
    p = data["pruning"]
    pruning = (
        None
        if p is None
        else Pruning(
            order=p["order"],
            amount=p["amount"],
            removed=tuple((k, int(h)) for k, h in p["removal_order"]),
            layouts=tuple(HeadLayout.from_json(x) for x in p["layouts"]),
            quality=p["quality"],
            parameters_before=p["parameters_before"],
            parameters_after=p["parameters_after"],
            kv_heads_before=p["kv_heads_before"],
            kv_heads_after=p["kv_heads_after"],
            max_difference=p["max_difference_vs_gated"],
            output_scale=p["output_scale"],
            latency=None
            if p["latency"] is None
            else Latency(
                tuple(p["latency"]["before_s"]),
                tuple(p["latency"]["after_s"]),
                p["latency"]["batch"],
                p["latency"]["tokens"],
            ),
            folder=p["folder"],
        )
    )
    return PruneReport(
        model=data["model"],
        layers=tuple(data["layers"]),
        heads_per_layer=data["heads_per_layer"],
        step=data["step"],
        texts=data["texts"],
        n_texts=data["n_texts"],
        heldout=data["heldout"],
        n_heldout=data["n_heldout"],
        loss=data["importance_loss"],
        metrics=tuple(Metric(m["name"], m["label"], m["higher_is_better"]) for m in data["metrics"]),
        baseline=data["baseline"],
        curves=curves,
        pruning=pruning,
        notes=tuple(data["notes"]),
        interrupted=data["interrupted"],
    )


def _by_order(curves: tuple[Curve, ...], values: Mapping[str, object]) -> str:
    """``importance 30%; entropy 20%; random 10%, 20% (seeds 0, 1)`` from values keyed by order label."""
    named = [f"{c.order.name} {_pct(values[c.order.label])}" for c in curves if c.order.seed is None]
    randoms = [c.order for c in curves if c.order.seed is not None]
    if randoms:
        named.append(
            "random "
            + ", ".join(_pct(values[o.label]) for o in randoms)
            + f" (seeds {', '.join(str(o.seed) for o in randoms)})"
        )
    return "; ".join(named)


def _pct(value: object) -> str:
    return f"{value:.0%}" if isinstance(value, float) else str(value)


def _named(heads: Sequence[tuple[LayerKey, int]]) -> list[tuple[str, int]]:
    return [(key.name, int(h)) for key, h in heads]


__all__ = ["FORMAT", "PruneReport", "read_report"]
