"""The bias report as one matplotlib figure: outputs by group, the gap and its change under ablation,
attention on the name per head, and the group contrast per head; findings and caveats as caption."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from headmap.apps.bias.findings import ALPHA, output_name
from headmap.render.static import new_figure
from headmap.result import CAUSATION_WARNING
from headmap.view.downsample import shorten, visible

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from headmap.apps.bias.report import BiasReport
    from headmap.apps.bias.stats import PairedStats

_TEXT: dict[str, Any] = {"parse_math": False}  # a "$" in a name or label is text, not a formula
_COLORS = ("#2b7bb9", "#d0612a")


def _label(text: str, width: int = 18) -> str:
    return shorten(visible(text), width)


def _outputs(ax: Axes, report: BiasReport) -> None:
    """Each prompt's output by group (jittered dots), with the group means."""
    rng = np.random.default_rng(0)  # jitter only: fixed so that the picture is reproducible
    for g in (0, 1):
        values = np.array([report.outputs[i] for i, p in enumerate(report.prompts) if p.group == g])
        x = g + rng.uniform(-0.18, 0.18, size=len(values))
        ax.scatter(x, values, s=14, color=_COLORS[g], alpha=0.75, linewidths=0)
        ax.hlines(values.mean(), g - 0.3, g + 0.3, color="0.15", lw=1.6)
    ax.set_xticks([0, 1], [_label(report.labels[0]), _label(report.labels[1])], fontsize=8, **_TEXT)
    ax.set_xlim(-0.6, 1.6)
    ax.set_ylabel(shorten(visible(output_name(report)), 40), fontsize=8, **_TEXT)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(f"output per name (line: group mean)\n{len(report.prompts)} prompts", fontsize=9, loc="left")


def _interval_bars(ax: Axes, rows: list[tuple[str, PairedStats, str]], title: str, xlabel: str) -> None:
    """Horizontal bars of mean differences with their bootstrap intervals as error bars."""
    y = np.arange(len(rows))
    means = np.array([s.mean for _, s, _ in rows])
    low = means - np.array([s.ci_low for _, s, _ in rows])
    high = np.array([s.ci_high for _, s, _ in rows]) - means
    ax.barh(y, means, height=0.6, color=[c for _, _, c in rows], xerr=[low, high], ecolor="0.2", capsize=3)
    for i, (_, s, _) in enumerate(rows):
        ax.text(
            s.ci_high if s.mean >= 0 else s.ci_low,
            i,
            f" {s.mean:+.3g} ",
            va="center",
            ha="left" if s.mean >= 0 else "right",
            fontsize=7,
        )
    ax.axvline(0, color="0.4", lw=0.8)
    ax.set_yticks(y, [label for label, _, _ in rows], fontsize=7, **_TEXT)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_title(title, fontsize=9, loc="left")
    ax.tick_params(axis="x", labelsize=7)
    lo = min(0.0, *(s.ci_low for _, s, _ in rows))
    hi = max(0.0, *(s.ci_high for _, s, _ in rows))
    pad = 0.35 * (hi - lo or 1.0)
    ax.set_xlim(lo - (pad if lo < 0 else 0.05 * pad), hi + (pad if hi > 0 else 0.05 * pad))


def _gap(ax: Axes, report: BiasReport) -> None:
    a, b = report.labels
    rows = [
        ("gap", report.gap, "#555555"),
        (f"gap, top {report.k}\nname heads ablated", report.gap_ablated, "#8a8a8a"),
    ]
    title = f"group gap {_label(a, 10)} - {_label(b, 10)}\n(mean over pairs, {report.confidence:.0%} CI)"
    _interval_bars(ax, rows, title, "mean difference")


def _change(ax: Axes, report: BiasReport) -> None:
    rows = [(f"top {report.k} name heads", report.ablation, "#d0612a")]
    rows += [(f"random set {i + 1}", c, "#b9b9b9") for i, c in enumerate(report.controls)]
    _interval_bars(
        ax,
        rows,
        f"causal check: change of the gap\nwhen {report.k} heads are ablated",
        "change of the mean difference",
    )


def _head_map(
    ax: Axes,
    report: BiasReport,
    values: np.ndarray,
    title: str,
    cmap: str,
    signed: bool,
    marks: np.ndarray,
    mark_label: str,
    sinks: np.ndarray | None = None,
) -> None:
    """A ``[layer, head]`` map drawn head x layer, with marked cells (``sinks``: red crosses)."""
    data = values.T
    if signed:
        top = float(np.nanmax(np.abs(data))) or 1.0
        image = ax.imshow(data, cmap=cmap, vmin=-top, vmax=top, aspect="auto", interpolation="nearest")
    else:
        image = ax.imshow(data, cmap=cmap, vmin=0.0, aspect="auto", interpolation="nearest")
    hs, ls = np.nonzero(marks.T)
    ax.scatter(
        ls, hs, marker="o", s=16, facecolors="white", edgecolors="black", linewidths=0.9
    )  # seen on any colour
    if sinks is not None and sinks.any():
        hs, ls = np.nonzero(sinks.T)
        ax.scatter(ls, hs, marker="x", s=22, color="#e8312f", linewidths=1.3)
        mark_label += "; red x: first-token sinks (name attention = weight on the first token)"
    layers = [name.rsplit(".", 1)[-1] for name in report.layers]
    step = max(1, len(layers) // 30)
    ax.set_xticks(range(0, len(layers), step), layers[::step], fontsize=7)
    ax.set_yticks(range(len(report.heads)), [str(h) for h in report.heads], fontsize=7)
    ax.set_xlabel("layer", fontsize=8)
    ax.set_ylabel("head", fontsize=8)
    ax.set_title(f"{title}; circles: {mark_label}", fontsize=9, loc="left")
    ax.figure.colorbar(image, ax=ax, fraction=0.03, pad=0.01).ax.tick_params(labelsize=7)


def _source(report: BiasReport) -> str:
    """Which rows the attention comes from, in a title's words."""
    return "from every row (mean)" if all(p is None for p in report.positions) else "from the answer position"


def report_figure(report: BiasReport) -> Figure:
    """The figure of :meth:`BiasReport.plot`; the caption holds the findings and the caveats."""
    # The warnings sit among the caveats, so the caption carries them once, in the caveats' order.
    notes = [*report.findings, *(line for line in report.caveats if line != CAUSATION_WARNING)]
    map_height = float(np.clip(0.22 * len(report.heads) + 0.9, 1.8, 4.5))
    fig = new_figure(13.0, 3.4 + 2 * map_height + 0.7, notes)
    grid = fig.add_gridspec(3, 3, height_ratios=[3.4, map_height, map_height], width_ratios=[0.8, 1.0, 1.0])
    _outputs(fig.add_subplot(grid[0, 0]), report)
    _gap(fig.add_subplot(grid[0, 1]), report)
    _change(fig.add_subplot(grid[0, 2]), report)
    marks = np.zeros(report.name_score.shape, dtype=bool)
    index = {
        (layer, head): (li, hi)
        for li, layer in enumerate(report.layers)
        for hi, head in enumerate(report.heads)
    }
    for pair in report.ablated:
        marks[index[pair]] = True
    _head_map(
        fig.add_subplot(grid[1, :]),
        report,
        report.name_score,
        f"attention {_source(report)} to the name (mean over pairs and both prompts)",
        "viridis",
        False,
        marks,
        f"the {report.k} ablated heads",
        report.sink_heads,
    )
    stats = report.head_statistics
    a, b = report.labels
    _head_map(
        fig.add_subplot(grid[2, :]),
        report,
        stats["mean"],
        f"contrast per head: (name - evidence attention) of {_label(a, 12)} minus that of {_label(b, 12)} "
        "(mean over pairs)",
        "RdBu_r",
        True,
        stats["t_q"] < ALPHA,
        f"Benjamini-Hochberg q < {ALPHA:g} (paired t-test)",
    )
    template = shorten(visible(report.template), 120)
    fig.suptitle(f"{report.model} · bias probe\n{template}", fontsize=10, x=0.01, ha="left", parse_math=False)
    return fig
