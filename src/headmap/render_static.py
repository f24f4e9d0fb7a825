"""Static heatmaps with matplotlib: one head, all heads of a layer, differences, layer profiles.

Every figure names the model, the layer and the head, states its normalization, and carries the
reminder that attention is correlation, not causation.
"""

from __future__ import annotations

import math
import textwrap
from typing import TYPE_CHECKING

import numpy as np

from headmap.downsample import downsample, downsample_note, pooled_labels
from headmap.errors import HeadmapError
from headmap.result import CAUSATION_WARNING, AttentionResult, LayerKey

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure

SEQUENTIAL = ("viridis", "magma", "inferno", "plasma", "cividis", "Blues", "Greys", "YlOrRd")
DIVERGING = ("RdBu_r", "RdBu", "coolwarm", "bwr", "seismic", "PuOr", "PiYG", "BrBG", "RdYlBu")
MAX_LABELLED = 80  # beyond this many cells an axis is labelled sparsely


def colormap(name: str) -> Colormap:
    """A matplotlib colormap by name, or a clear error listing some valid names."""
    import matplotlib

    try:
        return matplotlib.colormaps[name]
    except KeyError:
        raise HeadmapError(
            f"unknown colormap {name!r}: sequential {', '.join(SEQUENTIAL[:4])}; diverging {', '.join(DIVERGING[:4])}"
        ) from None


def _new_figure(width: float, height: float) -> Figure:
    # The object-oriented API never touches pyplot's global state or a display.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _fontsize(n: int) -> float:
    return float(np.clip(260 / max(n, 1), 4.5, 10))


def _is_log(result: AttentionResult) -> bool:
    return "log10" in result.normalization


def _caption(fig: Figure, *parts: str) -> None:
    text = " · ".join(p for p in parts if p)
    width = max(60, int(fig.get_figwidth() * 14))
    fig.text(0.5, 0.0, "\n".join(textwrap.wrap(text, width)), ha="center", va="top", fontsize=7, color="0.3",
             transform=fig.transFigure)


def _axis_labels(ax: Axes, rows: list[str], cols: list[str]) -> None:
    for labels, set_ticks, set_labels, n in (
        (cols, ax.set_xticks, ax.set_xticklabels, len(cols)),
        (rows, ax.set_yticks, ax.set_yticklabels, len(rows)),
    ):
        step = max(1, math.ceil(n / MAX_LABELLED))
        ticks = list(range(0, n, step))
        set_ticks(ticks)
        set_labels([labels[i] for i in ticks], fontsize=_fontsize(min(n, MAX_LABELLED)))
    for label in ax.get_xticklabels():
        label.set_rotation(90)


def _prepared(result: AttentionResult, key: LayerKey, weights: np.ndarray, max_tokens: int) -> tuple[np.ndarray, list[str], list[str], str]:
    layer = result.layer(key)
    rows = result.row_tokens(layer).labels()
    cols = result.key_tokens(key).labels()
    pooled, fq, fk = downsample(weights, max_tokens)
    return pooled, pooled_labels(rows, fq), pooled_labels(cols, fk), downsample_note(weights.shape[-2:], fq, fk)


def plot_head(
    result: AttentionResult,
    key: LayerKey,
    head: int,
    cmap: str = "viridis",
    max_tokens: int = 256,
    vmin: float | None = None,
    vmax: float | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Heatmap of one head: query tokens down the side, key tokens along the bottom."""
    key = result.resolve(key)
    weights = result.head(key, head)  # [query_row, key]
    pooled, rows, cols, note = _prepared(result, key, weights, max_tokens)
    if ax is None:
        side = float(np.clip(0.2 * max(pooled.shape) + 3, 5, 13))
        fig = _new_figure(side + 1.2, side)
        ax = fig.add_subplot()
    else:
        fig = ax.figure  # type: ignore[assignment]
    if vmin is None and not _is_log(result):
        vmin = 0.0
    image = ax.imshow(pooled, cmap=colormap(cmap), vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    _axis_labels(ax, rows, cols)
    ax.set_xlabel(f"key {result.key_tokens(key).unit}s (attended to)")
    ax.set_ylabel(f"query {result.query_tokens(key).unit}s (attending)")
    ax.set_title(f"{result.model} · {key.title()} · head {head}\n{result.normalization}", fontsize=10)
    bar = fig.colorbar(image, ax=ax, shrink=0.8)
    bar.set_label("log10 weight" if _is_log(result) else "attention weight")
    _caption(fig, note, *result.notes, CAUSATION_WARNING)
    return fig


def plot_grid(result: AttentionResult, key: LayerKey, cmap: str = "viridis", max_tokens: int = 128) -> Figure:
    """All captured heads of one layer on one shared colour scale."""
    key = result.resolve(key)
    layer = result.layer(key)
    pooled, rows, cols, note = _prepared(result, key, layer.weights, max_tokens)
    n = len(layer.heads)
    ncols = math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    fig = _new_figure(3.2 * ncols + 1, 3.2 * nrows + 0.8)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    vmin = None if _is_log(result) else 0.0
    vmax = float(np.max(pooled)) if pooled.size else None
    labelled = max(pooled.shape[-2:]) <= 24
    image = None
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        image = ax.imshow(pooled[i], cmap=colormap(cmap), vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
        ax.set_title(f"head {layer.heads[i]}", fontsize=9)
        if labelled:
            _axis_labels(ax, rows, cols)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{result.model} · {key.title()} · all heads\n{result.normalization}", fontsize=11)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6).set_label("log10 weight" if _is_log(result) else "attention weight")
    _caption(fig, note, *result.notes, CAUSATION_WARNING)
    return fig


def plot_diff(a: AttentionResult, b: AttentionResult, key: LayerKey, head: int, cmap: str = "RdBu_r",
              max_tokens: int = 256) -> Figure:
    """``a - b`` for one head on a diverging scale centred on zero (e.g. a counterfactual swap)."""
    key = a.resolve(key)
    wa, wb = a.head(key, head), b.head(key, head)
    if wa.shape != wb.shape:
        raise HeadmapError(f"maps differ in shape ({wa.shape} vs {wb.shape}): compare texts with equal token counts")
    pooled_pos, rows, cols, note = _prepared(a, key, np.maximum(wa - wb, 0), max_tokens)
    pooled_neg, _, _, _ = _prepared(a, key, np.maximum(wb - wa, 0), max_tokens)
    # Pool positive and negative parts separately so a cell shows its strongest change either way.
    diff = np.where(pooled_pos >= pooled_neg, pooled_pos, -pooled_neg)
    limit = float(np.abs(diff).max()) or 1.0
    side = float(np.clip(0.2 * max(diff.shape) + 3, 5, 13))
    fig = _new_figure(side + 1.2, side)
    ax = fig.add_subplot()
    image = ax.imshow(diff, cmap=colormap(cmap), vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
    _axis_labels(ax, rows, cols)
    ax.set_title(f"{a.model} · {key.title()} · head {head}\ndifference (first - second), {a.normalization}", fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.8).set_label("weight difference")
    _caption(fig, note, CAUSATION_WARNING)
    return fig


def layer_profile(result: AttentionResult) -> tuple[list[LayerKey], np.ndarray, np.ndarray]:
    """Per captured layer and head: mean row entropy (nats) and mean attention distance (tokens)."""
    keys, entropy, distance = [], [], []
    for layer in result.layers:
        w = layer.weights.astype(np.float64)  # [head, row, key]
        ent = -np.where(w > 0, w * np.log(np.where(w > 0, w, 1.0)), 0.0).sum(-1).mean(-1)
        gap = np.abs(np.asarray(layer.rows)[:, None] - np.arange(w.shape[-1])[None, :])
        keys.append(layer.key)
        entropy.append(ent)
        distance.append((w * gap).sum(-1).mean(-1))
    return keys, np.array(entropy), np.array(distance)


def plot_layer_profile(result: AttentionResult, cmap: str = "magma") -> Figure:
    """Layer-depth profile: entropy and distance of every head, layer by layer.

    Early layers tend to look locally and broadly, deeper layers at fewer, farther tokens; the
    same pattern means different things at different depths, so read a head against its layer.
    """
    if "raw" != result.normalization:
        raise HeadmapError("the layer profile needs raw weights: draw it from the result before normalizing")
    keys, entropy, distance = layer_profile(result)
    fig = _new_figure(11, max(3.5, 0.28 * len(keys) + 2))
    for ax, values, label in zip(fig.subplots(1, 2), (entropy, distance), ("mean entropy (nats)", "mean distance (tokens)")):
        image = ax.imshow(values, cmap=colormap(cmap), aspect="auto", interpolation="nearest")
        ax.set_yticks(range(len(keys)), [k.name for k in keys], fontsize=_fontsize(len(keys)))
        ax.set_xlabel("head")
        ax.set_title(label, fontsize=10)
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle(f"{result.model} · layer-depth profile ({len(result.source)} {result.source.unit}s)", fontsize=11)
    _caption(fig, CAUSATION_WARNING)
    return fig
