"""Attention drawn over the image: one head's (or the rollout's) row from CLS or a chosen patch.

The patch part of the row is laid on the patch grid and drawn over the image the model saw
(``Tokens.patches.pixels``); the prefix tokens (CLS, registers), which have no place in the image
and often take most of the weight (sinks), get bars beside it. The query patch is outlined, the
heaviest patch dashed. Titles and captions say what is shown, as every headmap picture does.
"""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.patches import Rectangle

from headmap.render.html import escape
from headmap.render.report import save_figure
from headmap.render.static import check_cmap, new_figure, plot_grid, plot_head
from headmap.result import AttentionResult, LayerKey
from headmap.tokens import PREFIX, Patches
from headmap.view.patches import patches_of, query_index, query_row, rollout_row

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.image import AxesImage

__all__ = ["figure_grid", "figure_head", "image_html", "plot_image_grid", "plot_image_head"]


def _draw_overlay(
    ax: Axes, patches: Patches, row: np.ndarray, query: int, cmap: str, vmax: float, alpha: float
) -> AxesImage:
    """The image in gray (or colour), the row's patch weights over it, the query and top patches outlined."""
    pixels = patches.pixels
    height, width = pixels.shape[:2]
    if pixels.shape[2] == 1:
        ax.imshow(pixels[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(pixels, interpolation="nearest")
    grid = patches.on_grid(row)
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    shown = ax.imshow(grid, cmap=cmap, vmin=0, vmax=vmax, alpha=alpha, extent=extent, interpolation="nearest")
    step = (height / patches.grid[0], width / patches.grid[1])

    def outline(cell: tuple[int, int], style: str, color: str) -> None:
        corner = (cell[1] * step[1] - 0.5, cell[0] * step[0] - 0.5)
        ax.add_patch(Rectangle(corner, step[1], step[0], fill=False, ec=color, lw=2, ls=style))

    if np.isfinite(grid).any():
        outline(np.unravel_index(int(np.nanargmax(grid)), grid.shape), "--", "white")  # type: ignore[arg-type]  # a 2-tuple of ints
    if patches.cells[query] != PREFIX:
        outline(patches.cells[query], "-", "cyan")
    ax.set_xticks([])
    ax.set_yticks([])
    return shown


#: Prefix tokens (or a VLM's text tokens) given a bar each; the lighter rest share one bar.
MAX_BARS = 8


def _prefix_bars(ax: Axes, result: AttentionResult, row: np.ndarray) -> None:
    """Bars for each prefix token's weight and for all patches together: where the sinks are. Where
    there are more than :data:`MAX_BARS` (a VLM's text tokens), the heaviest get bars, in order, and
    the rest one bar together."""
    patches = patches_of(result)
    prefix = list(patches.prefix)
    shown = sorted(sorted(prefix, key=lambda i: -row[i])[:MAX_BARS]) if len(prefix) > MAX_BARS else prefix
    rest = [i for i in prefix if i not in shown]
    labels = [result.source.tokens[i] for i in shown] + [f"{len(rest)} other tokens"] * bool(rest)
    values = [float(row[i]) for i in shown] + [float(sum(row[i] for i in rest))] * bool(rest)
    labels.append("all patches")
    values.append(float(row.sum() - sum(row[i] for i in prefix)))
    colors = ["tab:orange"] * (len(labels) - 1) + ["tab:blue"]
    ax.barh(range(len(labels)), values, color=colors)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the row", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)


def _what(result: AttentionResult, key: LayerKey | None, head: int | None, query: int) -> str:
    source = result.source.tokens[query]
    if key is None:
        return f"rollout over all {len(result.layers)} layers · from {source}"
    heads = f"head {head}" if head is not None else "mean of heads"
    return f"{key.title()} · {heads} · from {source}"


def plot_image_head(
    result: AttentionResult,
    key: LayerKey | int | str | None = None,
    head: int | None = None,
    query: int | str = 0,
    rollout: bool = False,
    cmap: str = "inferno",
    alpha: float = 0.6,
) -> Figure:
    """One head's attention from unit ``query`` (default the first: CLS where the model has one) drawn
    over the image, with the prefix tokens' shares beside it. ``head=None`` averages the layer's
    captured heads; ``rollout=True`` draws the rollout over all layers instead (``key`` unused)."""
    check_cmap(cmap)
    patches = patches_of(result)
    index = query_index(result.source, query)
    resolved = None if rollout else result.resolve(key if key is not None else result.keys[0])
    row = rollout_row(result, index) if resolved is None else query_row(result, resolved, head, index)
    bars = bool(patches.prefix)
    fig = new_figure(6.2 if bars else 4.4, 3.6, [f"{len(result.source)} units: {_layout_text(result)}"])
    axes = fig.subplots(1, 2, width_ratios=[3, 2]) if bars else [fig.add_subplot()]
    patch_part = patches.on_grid(row)
    vmax = float(np.nanmax(patch_part)) if np.isfinite(patch_part).any() else 1.0
    shown = _draw_overlay(axes[0], patches, row, index, cmap, vmax or 1.0, alpha)
    fig.colorbar(shown, ax=axes[0], fraction=0.05, pad=0.02).set_label("weight (patches)", fontsize=8)
    if bars:
        _prefix_bars(axes[1], result, row)
    fig.suptitle(f"{result.model}\n{_what(result, resolved, head, index)}", fontsize=9, x=0.02, ha="left")
    return fig


def plot_image_grid(
    result: AttentionResult,
    key: LayerKey | int | str | None = None,
    query: int | str = 0,
    cmap: str = "inferno",
) -> Figure:
    """Every captured head of a layer drawn over the image from unit ``query``, on one colour scale;
    each panel's title gives the share the prefix tokens (CLS, registers) take."""
    check_cmap(cmap)
    patches = patches_of(result)
    index = query_index(result.source, query)
    resolved = result.resolve(key if key is not None else result.keys[0])
    heads = result.layer(resolved).heads
    rows = [query_row(result, resolved, h, index) for h in heads]
    cols = int(np.ceil(np.sqrt(len(heads))))
    lines = int(np.ceil(len(heads) / cols))
    fig = new_figure(
        2.2 * cols + 1.0, 2.3 * lines + 0.6, [f"{len(result.source)} units: {_layout_text(result)}"]
    )
    axes = np.atleast_1d(fig.subplots(lines, cols, squeeze=False)).ravel()
    vmax = max(float(np.nanmax(patches.on_grid(r))) for r in rows) or 1.0
    for ax in axes[len(heads) :]:
        ax.set_axis_off()
    shown = None
    for ax, h, row in zip(axes, heads, rows):
        shown = _draw_overlay(ax, patches, row, index, cmap, vmax, 0.6)
        prefix = sum(float(row[i]) for i in patches.prefix)
        ax.set_title(f"head {h}" + (f" · prefix {prefix:.2f}" if patches.prefix else ""), fontsize=8)
    assert shown is not None
    fig.colorbar(shown, ax=list(axes[: len(heads)]), shrink=0.8).set_label("weight (patches)", fontsize=8)
    what = f"{resolved.title()} · all {len(heads)} heads · from {result.source.tokens[index]}"
    fig.suptitle(f"{result.model}\n{what}", fontsize=9, x=0.02, ha="left")
    return fig


def _layout_text(result: AttentionResult) -> str:
    patches = patches_of(result)
    grid = f"{patches.grid[0]}x{patches.grid[1]}"
    first_patch = next((i for i, cell in enumerate(patches.cells) if cell != PREFIX), 0)
    if any(i > first_patch for i in patches.prefix):
        # A VLM's input: text tokens around the image tokens, which are the grid.
        return f"a {grid} grid of image tokens among {len(patches.prefix)} text tokens; text tokens' weights in bars"
    prefix = ", ".join(result.source.tokens[i] for i in patches.prefix) or "no prefix tokens"
    return f"{prefix}, then a {grid} grid of patches; weights of prefix tokens in bars"


def image_html(
    result: AttentionResult, key: LayerKey | int | str | None, head: int | None, **options: Any
) -> str:
    """A self-contained HTML fragment: the over-image picture (one head, or every head where ``head``
    is None) as an embedded PNG, so the page needs no other file."""
    resolved = result.keys[0] if key is None else key
    fig = (
        figure_grid(result, resolved, **options)
        if head is None
        else figure_head(result, resolved, head, **options)
    )
    buffer = io.BytesIO()
    save_figure(fig, buffer, "png")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    alt = escape(f"{result.model}: attention over the image")
    return f'<figure class="headmap-image"><img alt="{alt}" src="data:image/png;base64,{data}"></figure>'


def figure_head(result: AttentionResult, key: LayerKey | int | str, head: int, **options: Any) -> Figure:
    """``result.figure(layer, head)``: over the image for an image result (``matrix=True``: the
    ``[query, key]`` heatmap, as for text), else :func:`headmap.render.static.plot_head`."""
    if result.source.patches is not None and not options.pop("matrix", False):
        return plot_image_head(result, key, head, **options)
    options.pop("matrix", None)
    return plot_head(result, key, head, **options)


def figure_grid(result: AttentionResult, key: LayerKey | int | str, **options: Any) -> Figure:
    """``result.figure(layer, head=None)``: every head over the image for an image result (``matrix=True``:
    heatmaps), else :func:`headmap.render.static.plot_grid`; ``rollout=True`` draws the rollout."""
    if result.source.patches is not None and not options.pop("matrix", False):
        if options.pop("rollout", False):
            return plot_image_head(result, key, None, rollout=True, **options)
        return plot_image_grid(result, key, **options)
    options.pop("matrix", None)
    return plot_grid(result, key, **options)
