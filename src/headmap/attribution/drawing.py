"""Draw an :class:`~headmap.attribution.explanation.Explanation`: a static figure (PNG, SVG, PDF);
the HTML page is in :mod:`headmap.attribution.page`, and :mod:`headmap.render.report` writes both.

Every method gets one row over the same units. Colours are each method's scores divided by its
largest magnitude over the included units, on a diverging scale centred on zero (blue: lowers the
output, red: raises it; attention-like methods have no sign and stay red). Units left out of the
agreement (special tokens, tokens the output cannot see, units a method did not measure) are grey:
a sink such as [CLS] would otherwise wash out every other colour. The raw numbers are in the
cells, the JSON and the table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from headmap.errors import HeadmapError
from headmap.render.report import format_number
from headmap.render.static import new_figure, wrap_lines
from headmap.view.downsample import shorten, visible

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from headmap.attribution.explanation import Explanation

CMAP = "RdBu_r"
#: Beyond this many units a row, cells get no numbers (they would not fit).
ANNOTATE_MAX_UNITS = 40


def display_values(ex: Explanation, method: str) -> np.ndarray:
    """``[unit]`` scores scaled to [-1, 1] by the largest magnitude among included units; NaN where
    a unit is left out or not measured."""
    values = np.where(ex.included, ex.scores[method], np.nan)
    finite = values[np.isfinite(values)]
    scale = float(np.abs(finite).max()) if finite.size else 0.0
    return values / scale if scale > 0 else np.where(np.isfinite(values), 0.0, np.nan)


def color_of(value: float) -> tuple[str, str]:
    """``(background, text)`` hex colours of a display value in [-1, 1] (NaN: grey)."""
    import matplotlib

    if not np.isfinite(value):
        return "#d9d9d9", "#333333"
    r, g, b, _ = matplotlib.colormaps[CMAP]((float(value) + 1.0) / 2.0)
    text = "#ffffff" if abs(value) > 0.6 else "#111111"
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}", text


def headline(ex: Explanation) -> list[str]:
    """The lines that say what is explained (untrusted text inside: escape for HTML)."""
    lines = [f"{ex.model} · explained output: {ex.target.get('description')} = {ex.output:.6g}"]
    baseline = ex.baseline_output
    if baseline is not None:
        lines.append(f"F(baseline) = {baseline:.6g} · F(x) - F(baseline) = {ex.output - baseline:.6g}")
    return lines


def _causal_lines(ex: Explanation) -> list[str]:
    table = ex.causal_agreement()
    if table.empty:
        return ["how causal is this picture: occlusion did not run, so there is no causal reference"]
    lines = [
        f"how causal is this picture (rank agreement with occlusion over {int(table['n'].iloc[0])} {ex.unit}s):"
    ]
    for row in table.itertuples():
        lines.append(
            f"  {ex.label(row.method):<22} Spearman {row.spearman:+.2f}  Kendall {row.kendall:+.2f}  "
            f"Spearman of |scores| {row.spearman_abs:+.2f}"
        )
    return lines


def figure(ex: Explanation, max_label: int = 14) -> Figure:
    """The static figure: methods x units coloured, numbers in the cells, agreement and caveats below."""
    import matplotlib

    methods = list(ex.methods)
    if not methods:
        raise HeadmapError("the explanation has no methods to draw")
    labels = [shorten(visible(t), max_label) for t in ex.axis.tokens]
    n = len(labels)
    values = np.vstack([display_values(ex, m) for m in methods])
    cell = 0.55 if n <= ANNOTATE_MAX_UNITS else max(0.12, 10.0 / n)
    width = max(6.0, 1.8 + cell * n)
    title = wrap_lines(headline(ex), width - 0.5, font=9.0)
    legend = (
        f"colour: score / max |score| per method over the included {ex.unit}s; red raises the output, "
        "blue lowers it; grey: left out (special, unseen or not measured)"
    )
    text_lines = [*_causal_lines(ex), *wrap_lines([legend], width - 1.0, font=8.5)]
    label_room = max(len(t) for t in labels) * 7.0 * 0.6 / 72 * 0.82 + 0.25
    heat, text_height = 0.42 * len(methods), len(text_lines) * 7.0 * 1.45 / 72 + 0.1
    fig = new_figure(
        width, heat + label_room + len(title) * 9 * 1.4 / 72 + text_height + 0.45, ex.caveats()[1:]
    )
    grid = fig.add_gridspec(2, 1, height_ratios=[heat, text_height])
    ax = fig.add_subplot(grid[0])
    cmap = matplotlib.colormaps[CMAP].with_extremes(bad="#d9d9d9")
    ax.imshow(
        np.ma.masked_invalid(values), cmap=cmap, vmin=-1, vmax=1, aspect="auto", interpolation="nearest"
    )
    ax.set_yticks(range(len(methods)), [ex.label(m) for m in methods], fontsize=8)
    for tick, method in zip(ax.get_yticklabels(), methods):
        if method in ex.flags:
            tick.set_color("#b00000")  # an unconverged IG row reads as a warning, not as scores
    ax.set_xticks(
        range(n), labels, fontsize=7, rotation=55, ha="right", rotation_mode="anchor", parse_math=False
    )
    ax.set_xticks(np.arange(-0.5, n, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, len(methods), 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=1.2)
    ax.tick_params(which="minor", length=0)
    if n <= ANNOTATE_MAX_UNITS:
        for i, method in enumerate(methods):
            for j, raw in enumerate(ex.scores[method]):
                shown = values[i, j]
                color = "white" if np.isfinite(shown) and abs(shown) > 0.6 else "#222222"
                ax.text(
                    j,
                    i,
                    format_number(raw),
                    ha="center",
                    va="center",
                    fontsize=5.5,
                    color=color,
                    parse_math=False,
                )
    ax.set_title("\n".join(title), fontsize=9, loc="left", parse_math=False)
    text_ax = fig.add_subplot(grid[1])
    text_ax.axis("off")
    # Outside the layout: a wide line would otherwise squeeze the heatmap's column.
    text_ax.text(
        0.0,
        1.0,
        "\n".join(text_lines),
        ha="left",
        va="top",
        family="monospace",
        fontsize=7,
        transform=text_ax.transAxes,
        parse_math=False,
    ).set_in_layout(False)
    return fig
