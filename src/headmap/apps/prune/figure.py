"""The pruning curve: held-out quality against the share of heads removed, one line per order."""

from __future__ import annotations

from typing import TYPE_CHECKING

from headmap.apps.prune.pruning import KEEP, mean_random
from headmap.render.static import new_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from headmap.apps.prune.quality import Metric
    from headmap.apps.prune.report import PruneReport

COLORS = {"importance": "#1f77b4", "entropy": "#d62728", "random": "0.55"}


def _panel(ax: Axes, report: PruneReport, metric: Metric) -> None:
    total = report.total_heads
    for curve in report.curves:
        x = [100 * c / total for c in curve.counts]
        y = curve.values[metric.name]
        if curve.order.name == "random":
            ax.plot(x, y, color=COLORS["random"], lw=0.8, alpha=0.6)
        else:
            ax.plot(
                x, y, color=COLORS.get(curve.order.name, "k"), lw=2, marker="o", ms=4, label=curve.order.name
            )
    random = mean_random(report, metric)
    if random is not None:
        seeds = [str(c.order.seed) for c in report.curves if c.order.name == "random"]
        mean = "geometric mean" if metric.name == "perplexity" else "mean"
        # One seed has no mean to speak of and its thin line is the dashed one.
        label = (
            f"random, seed {seeds[0]}"
            if len(seeds) == 1
            else f"random, {mean} of seeds {', '.join(seeds)} (thin: each)"
        )
        ax.plot(
            [100 * c / total for c in random[0]],
            random[1],
            color="0.35",
            lw=1.6,
            ls="--",
            label=label,
        )
    base = report.baseline[metric.name]
    ax.axhline(base, color="0.2", lw=0.8, ls=":")
    limit = KEEP * base if metric.higher_is_better else base / KEEP
    ax.axhline(limit, color="#2ca02c", lw=0.8, ls="--", label=f"within {KEEP:.0%} of unpruned")
    if report.pruning is not None and metric.name in report.pruning.quality:
        p = report.pruning
        ax.plot(
            [100 * len(p.removed) / total],
            [p.quality[metric.name]],
            marker="*",
            ms=14,
            color="#ff7f0e",
            ls="none",
            label=f"cut model ({p.order}, {p.amount:.0%})",
        )
    if not metric.higher_is_better:
        ax.set_yscale("log")
    ax.set_xlabel(f"share of the {total} heads removed (%)", fontsize=9)
    ax.set_ylabel(metric.label + (" (log scale)" if not metric.higher_is_better else ""), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def curve_figure(report: PruneReport) -> Figure:
    """One panel per metric (decoders: perplexity; encoders: Spearman of similarities, mean cosine)."""
    loss = report.loss
    notes = [
        *report.summary,
        f"Heads gated off (headmap.ablate, zero) in order: importance = Michel et al. |d loss / d gate| over "
        f"{report.n_texts} texts of {report.texts} ({loss}), l2-normalized per layer and recomputed after each step of "
        f"{report.step:.0%}; random = numpy default_rng(seed) permutations; entropy = highest mean normalized "
        "attention entropy first (broadest heads). Every order keeps one head per layer. Quality on "
        f"{report.n_heldout} held-out texts of {report.heldout}.",
        *report.caveats[:-1],
    ]
    n = len(report.metrics)
    fig = new_figure(6.2 * n + 0.6, 4.6, notes)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, metric in zip(axes, report.metrics):
        _panel(ax, report, metric)
    fig.suptitle(
        f"{report.model} · head pruning without fine-tuning: held-out quality vs heads removed",
        fontsize=11,
        x=0.01,
        ha="left",
        parse_math=False,
    )
    return fig


__all__ = ["curve_figure"]
