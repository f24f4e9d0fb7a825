"""Static heatmaps with matplotlib: one head, a grid of heads, a difference, a layer-depth profile.

Every picture names the model, the layer, the head(s) and the normalization in its title and
carries a caption with the causation warning and any downsampling, so that a PNG found later in
a slide deck still says what it shows. Long inputs are max-pooled (peaks survive) before drawing:
``imshow`` over at most ``max_tokens`` cells a side keeps an 8192-token map well under a second.
Figures are made through pyplot so that ``result.show()`` and notebooks display them; whoever
saves one to a file closes it (:func:`headmap.render.render_to_file` does).
"""

from __future__ import annotations

import difflib
import os
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

import matplotlib
import numpy as np

from headmap.errors import HeadmapError, check_index
from headmap.result import CAUSATION_WARNING, AttentionResult, LayerKey, LayerMap
from headmap.view.downsample import Prepared, axis_labels, color_limits, prepare

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.image import AxesImage
    from matplotlib.layout_engine import ConstrainedLayoutEngine

SEQUENTIAL = ("viridis", "magma", "cividis", "inferno", "Blues", "Greys")
DIVERGING = ("RdBu_r", "coolwarm", "PuOr", "seismic")
CAPTION_FONT = 7.0
MIN_LABEL_FONT = 6.0


def _use_agg_when_headless() -> None:
    """Choose Agg before pyplot loads on a machine without a display, unless a backend was chosen.

    Jupyter sets ``MPLBACKEND`` itself, so notebooks keep their inline backend.
    """
    headless = sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )
    chosen = getattr(matplotlib.rcParams, "_get_backend_or_none", lambda: None)()
    if (
        headless
        and chosen is None
        and "MPLBACKEND" not in os.environ
        and "matplotlib.pyplot" not in sys.modules
    ):
        matplotlib.use("Agg")


_use_agg_when_headless()
import matplotlib.pyplot as plt  # noqa: E402  (after the backend choice on purpose)


# -- small pure helpers ------------------------------------------------------------------------
def check_cmap(name: str) -> str:
    """``name`` if matplotlib knows the colormap, else :class:`HeadmapError` listing valid ones."""
    if isinstance(name, str) and name in matplotlib.colormaps:
        return name
    close = difflib.get_close_matches(str(name), list(matplotlib.colormaps), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise HeadmapError(
        f"unknown colormap {name!r}{hint}: sequential ones include {', '.join(SEQUENTIAL)}; "
        f"diverging ones include {', '.join(DIVERGING)}"
    )


def axis_inches(n_cells: int) -> float:
    """Axis length for ``n_cells`` cells: 0.16 in per token keeps 60 tokens at 9 pt; capped at 10 in."""
    return float(min(10.0, max(0.16 * n_cells, min(3.0, 0.5 + 0.5 * n_cells))))


def label_font(inches: float, n_cells: int, step: int) -> float:
    """Tick-label size that shrinks as labels get closer together (``step`` cells apart)."""
    spacing_pt = inches * 72 * step / max(1, n_cells)
    return float(np.clip(spacing_pt * 0.8, MIN_LABEL_FONT - 1.0, 10.0))


def wrap_lines(lines: Sequence[str], inches: float, font: float = CAPTION_FONT) -> list[str]:
    """Wrap each caption line to ``inches`` (an average DejaVu Sans glyph is ~0.6 em wide)."""
    width = max(20, int(inches * 72 / (font * 0.6)))
    return [part for line in lines if line for part in textwrap.wrap(line, width)]


@dataclass(frozen=True)
class Ticks:
    """Tick labels planned for one axis."""

    positions: list[int]
    texts: list[str]
    style: dict[str, Any]  # matplotlib Text properties, of mixed types: passed on as keywords
    extent: float  # inches the labels need away from the axis


def plan_ticks(
    labels: list[str], factor: int, n_cells: int, inches: float, vertical: bool, cap: int | None = None
) -> Ticks:
    """Which labels fit along an axis of ``inches`` and how big; thinned below :data:`MIN_LABEL_FONT`."""
    room = max(1, int(inches * 72 * 0.8 / MIN_LABEL_FONT))
    positions, texts = axis_labels(labels, factor, min(room, cap or room), width=14 if factor == 1 else 8)
    step = positions[1] - positions[0] if len(positions) > 1 else 1
    font = label_font(inches, n_cells, step)
    # parse_math off: a token such as "$x$" is text, not a formula (and a bad one would not draw).
    style: dict[str, Any] = {"fontsize": font, "parse_math": False}
    if not vertical:
        steep = len(texts) > 24
        style.update(
            rotation=90 if steep else 55, **({} if steep else {"ha": "right", "rotation_mode": "anchor"})
        )
    extent = max((len(t) for t in texts), default=0) * font * 0.6 / 72
    return Ticks(positions, texts, style, extent)


def _apply_ticks(ax: Axes, x: Ticks, y: Ticks, unit: str) -> None:
    ax.set_xticks(x.positions, x.texts, **x.style)
    ax.set_yticks(y.positions, y.texts, **y.style)
    ax.set_xlabel(f"key {unit}s (attended to)", fontsize=9)
    ax.set_ylabel(f"query {unit}s (attending)", fontsize=9)


def _title(model: str, what: str, normalization: str) -> str:
    return f"{model}\n{what} · normalization: {normalization}"


def new_figure(width: float, body_height: float, notes: Sequence[str]) -> Figure:
    """A constrained-layout figure with a strip at the bottom holding the caption (notes + warning)."""
    caption = wrap_lines([*notes, CAUSATION_WARNING], width)
    cap = len(caption) * CAPTION_FONT * 1.4 / 72 + 0.15
    height = body_height + cap
    fig = plt.figure(figsize=(width, height), layout="constrained")
    # layout="constrained" makes a ConstrainedLayoutEngine, the one whose set() takes a rect.
    engine = cast("ConstrainedLayoutEngine", fig.get_layout_engine())
    engine.set(rect=(0, cap / height, 1, 1 - cap / height))
    fig.text(
        0.01,
        (cap - 0.06) / height,
        "\n".join(caption),
        ha="left",
        va="top",
        fontsize=CAPTION_FONT,
        color="0.3",
        parse_math=False,
    )
    return fig


def _caption_below(ax: Axes, notes: Sequence[str], inches: float) -> None:
    """On a caller's axes, hang the caption under the x-axis label (save with bbox_inches='tight')."""
    ax.annotate(
        "\n".join(wrap_lines([*notes, CAUSATION_WARNING], inches)),
        xy=(0, 0),
        xycoords=("axes fraction", ax.xaxis.label),
        xytext=(0, -4),
        textcoords="offset points",
        ha="left",
        va="top",
        fontsize=CAPTION_FONT,
        color="0.3",
        parse_math=False,
        annotation_clip=False,
    )


def _image(ax: Axes, values: np.ndarray, cmap: str, limits: tuple[float, float]) -> AxesImage:
    # nearest: a pooled cell is a block max; smoothing would spread and dim the peak.
    return ax.imshow(
        values, cmap=cmap, vmin=limits[0], vmax=limits[1], aspect="auto", interpolation="nearest"
    )


def _root_figure(ax: Axes) -> Figure:
    """The figure ``ax`` is drawn in: the top one when ``ax`` sits in a subfigure (which has no size)."""
    fig = ax.get_figure(root=True)
    if fig is None:
        raise HeadmapError(
            "the axes belong to no figure: pass axes made by plt.subplots() or fig.add_subplot()"
        )
    return fig


def _heatmap(
    prep: Prepared,
    values: np.ndarray,
    title: str,
    cbar: str,
    cmap: str,
    limits: tuple[float, float],
    unit: str,
    ax: Axes | None,
) -> Figure:
    """One ``[query, key]`` map with labelled axes, colorbar, title and caption, on ``ax`` or a new figure."""
    n_q, n_k = values.shape
    if ax is None:
        size = (axis_inches(n_k), axis_inches(n_q))
    else:
        box, parent = ax.get_position(), _root_figure(ax)
        size = (box.width * parent.get_figwidth(), box.height * parent.get_figheight())
    x = plan_ticks(prep.key_labels, prep.factors[1], n_k, size[0], vertical=False)
    y = plan_ticks(prep.row_labels, prep.factors[0], n_q, size[1], vertical=True)
    if ax is None:
        fig = new_figure(size[0] + y.extent + 2.0, size[1] + x.extent + 1.4, prep.notes)
        ax = fig.add_subplot()
    else:
        fig = _root_figure(ax)
        # No wider than the axes: a layout engine would squeeze the axes to make room for it.
        _caption_below(ax, prep.notes, 0.9 * size[0])
    image = _image(ax, values, cmap, limits)
    _apply_ticks(ax, x, y, unit)
    ax.set_title(title, fontsize=10, loc="left", parse_math=False)
    fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02).set_label(cbar, fontsize=9)
    return fig


# -- public plots ------------------------------------------------------------------------------
def plot_head(
    result: AttentionResult,
    key: LayerKey | int | str,
    head: int,
    cmap: str = "viridis",
    max_tokens: int = 256,
    vmin: float | None = None,
    vmax: float | None = None,
    ax: Axes | None = None,
) -> Figure:
    """One head's map ``[query, key]``: query tokens down the side, key tokens along the bottom.

    Beyond ``max_tokens`` tokens on an axis the map is max-pooled (each cell is the max of a block
    of tokens, so peaks survive), labels become token ranges, and the caption says so.
    ``vmin``/``vmax`` fix the colour range (default: 0 to the largest weight; the data range for
    log10 weights). With ``ax`` the map is drawn there and the caption hangs below it.
    """
    check_cmap(cmap)
    key = result.resolve(key)
    prep = prepare(result, key, [head], max_tokens)
    values = prep.values[0]
    title = _title(result.model, f"{key.title()} · head {prep.heads[0]}", result.normalization.caption)
    limits = color_limits(values, result.normalization, vmin, vmax)
    return _heatmap(
        prep, values, title, result.normalization.value_label, cmap, limits, result.source.unit, ax
    )


def plot_grid(
    result: AttentionResult,
    key: LayerKey | int | str,
    cmap: str = "viridis",
    max_tokens: int = 128,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Figure:
    """All captured heads of ``key`` in a near-square grid on one shared colour scale.

    Panels are small, so ``max_tokens`` defaults lower than in :func:`plot_head` (a cell must stay
    at least a pixel) and token labels are drawn only for short inputs, on the outer panels.
    """
    check_cmap(cmap)
    key = result.resolve(key)
    prep = prepare(result, key, None, max_tokens)
    n, (n_q, n_k) = len(prep.heads), prep.values.shape[-2:]
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    panel = min(2.6, 14.0 / cols)
    labelled = max(n_q, n_k) <= 24
    x = plan_ticks(prep.key_labels, prep.factors[1], n_k, panel, vertical=False, cap=24)
    y = plan_ticks(prep.row_labels, prep.factors[0], n_q, panel, vertical=True, cap=24)
    margin = (x.extent, y.extent) if labelled else (0.0, 0.0)
    fig = new_figure(cols * panel + margin[1] + 1.5, rows * panel + margin[0] + 1.3, prep.notes)
    axes = fig.subplots(rows, cols, squeeze=False)
    limits = color_limits(prep.values, result.normalization, vmin, vmax)
    for ax in axes.flat[n:]:
        ax.set_axis_off()
    for i, ax in enumerate(axes.flat[:n]):
        image = _image(ax, prep.values[i], cmap, limits)
        ax.set_title(f"head {prep.heads[i]}", fontsize=9)
        ax.set_xticks(
            x.positions if labelled else [], x.texts if labelled and i + cols >= n else [], **x.style
        )
        ax.set_yticks(
            y.positions if labelled else [], y.texts if labelled and i % cols == 0 else [], **y.style
        )
    fig.colorbar(image, ax=list(axes.flat[:n]), shrink=0.8).set_label(
        result.normalization.value_label, fontsize=9
    )
    title = _title(result.model, f"{key.title()} · all {n} captured heads", result.normalization.caption)
    fig.suptitle(title, fontsize=10, x=0.02, ha="left", parse_math=False)
    return fig


def plot_diff(
    a: AttentionResult,
    b: AttentionResult,
    key: LayerKey | int | str,
    head: int,
    cmap: str = "RdBu_r",
    max_tokens: int = 256,
    ax: Axes | None = None,
) -> Figure:
    """``a - b`` for one head ``[query, key]``, on a diverging scale centred on zero (symmetric limits).

    Both maps must have the same shape and query rows (e.g. a text and its counterfactual with the
    same token count). Pooling keeps, per block, the difference of largest magnitude with its sign.
    """
    check_cmap(cmap)
    key = a.resolve(key)
    map_a, map_b = a.head(key, head), b.head(key, head)
    if map_a.shape != map_b.shape or a.layer(key).rows != b.layer(key).rows:
        raise HeadmapError(
            f"cannot compare {key.title()} head {head}: the maps have shape {map_a.shape} and {map_b.shape} "
            "with different tokens or rows; compare texts of equal token count, captured and masked alike"
        )
    h = check_index(head, a.num_heads, "head")
    diff = a.with_layers([LayerMap(key, (h,), a.layer(key).rows, (map_a - map_b)[None])])
    prep = prepare(diff, key, [h], max_tokens, signed=True)
    if a.key_tokens(key).tokens != b.key_tokens(key).tokens:
        prep = replace(
            prep,
            notes=[
                "the two inputs have different tokens; the labels are those of the first (a)",
                *prep.notes,
            ],
        )
    values = prep.values[0]
    bound = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 0.0
    bound = bound if bound > 0 else 1e-6  # an all-zero difference still needs a valid range
    models = a.model if a.model == b.model else f"{a.model} − {b.model}"
    norm = (
        a.normalization.caption
        if a.normalization == b.normalization
        else f"{a.normalization.caption} vs {b.normalization.caption}"
    )
    title = _title(f"difference a − b · {models}", f"{key.title()} · head {h}", norm)
    return _heatmap(
        prep,
        values,
        title,
        f"{a.normalization.value_label} difference (a − b)",
        cmap,
        (-bound, bound),
        a.source.unit,
        ax,
    )


# -- layer-depth profile -----------------------------------------------------------------------
