"""The layer-depth profile: one statistic per head, drawn against depth (what a head does depends on it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from headmap.errors import HeadmapError, check_index
from headmap.render.static import _title, check_cmap, label_font, new_figure, plt
from headmap.result import AttentionResult, LayerKey, LayerMap, Stack

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


PROFILE_STATS = {"entropy": "mean row entropy (nats)", "distance": "mean attention distance |q−k| (tokens)"}
DEPTH_NOTE = (
    "Read each value against its depth: heads are numbered independently per layer (head 3 of two "
    "layers are unrelated heads), and the same entropy or distance can mean a positional pattern in "
    "early layers but a sink or a content match in late ones."
)


def head_profile(layer: LayerMap, log10: bool = False) -> dict[str, np.ndarray]:
    """Per head of ``layer`` (``weights`` ``[head, row, key]``): mean row entropy and attention distance.

    Rows are renormalized to sum to 1 first, so masked or filtered maps stay comparable; log10
    weights are turned back into weights. Distance is ``sum_k a_k |q - k|`` in token positions, NaN
    for cross-attention (queries and keys are different texts). Returns ``{stat: [head]}``.
    """
    # float32 temporaries with float64 sums: an 8192-token head costs ~1 GB at most, not ~2.
    gap = np.abs(
        np.asarray(layer.rows, np.float32)[:, None] - np.arange(layer.weights.shape[-1], dtype=np.float32)
    )
    out: dict[str, list[float]] = {name: [] for name in PROFILE_STATS}
    for w in layer.weights:  # one head at a time bounds the temporaries to one [row, key] map
        w = np.power(np.float32(10.0), w, dtype=np.float32) if log10 else np.maximum(w, 0.0, dtype=np.float32)
        total = w.sum(-1, keepdims=True, dtype=np.float64).astype(np.float32)
        p = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
        kept = total[:, 0] > 0
        entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(-1, dtype=np.float64)
        out["entropy"].append(float(entropy[kept].mean()) if kept.any() else np.nan)
        far = (p * gap).sum(-1, dtype=np.float64)
        out["distance"].append(
            np.nan if layer.key.stack is Stack.CROSS or not kept.any() else float(far[kept].mean())
        )
    return {name: np.asarray(values) for name, values in out.items()}


def layer_profile(
    result: AttentionResult, stats: Sequence[str] = tuple(PROFILE_STATS)
) -> tuple[list[LayerKey], list[int], dict[str, np.ndarray]]:
    """``(layers, heads, {stat: [layer, head]})`` over every captured layer, in depth order.

    Heads missing from a layer are NaN.
    """
    layers = sorted(result.layers, key=lambda layer: layer.key.sort_key)
    if not layers:
        raise HeadmapError("the result has no captured layers to profile")
    heads = sorted({h for layer in layers for h in layer.heads})
    table = {name: np.full((len(layers), len(heads)), np.nan) for name in stats}
    for li, layer in enumerate(layers):
        values = head_profile(layer, log10=result.normalization.is_log)
        for name in stats:
            table[name][li, [heads.index(h) for h in layer.heads]] = values[name]
    return [layer.key for layer in layers], heads, table


def plot_layer_profile(
    result: AttentionResult,
    head: int | None = None,
    stat: str | Sequence[str] = ("entropy", "distance"),
    kind: str = "lines",
    cmap: str = "magma",
) -> Figure:
    """Layer-depth profile: a per-head statistic against layer, for every captured layer.

    ``stat`` is ``"entropy"`` (mean row entropy, nats), ``"distance"`` (mean attention distance
    ``|q - k|`` weighted by attention, tokens) or both. ``kind="lines"`` draws one line per head
    (``head`` picks one) plus the mean over heads; ``kind="heatmap"`` a ``[layer x head]`` map.
    The meaning of a value differs by depth (see :data:`DEPTH_NOTE`, printed in the caption).
    """
    names = [stat] if isinstance(stat, str) else list(stat)
    unknown = [s for s in names if s not in PROFILE_STATS] + (
        [kind] if kind not in ("lines", "heatmap") else []
    )
    if unknown or not names:
        raise HeadmapError(
            f"unknown profile option {unknown}: stat is one of {', '.join(PROFILE_STATS)}; kind lines or heatmap"
        )
    check_cmap(cmap)
    keys, heads, table = layer_profile(result, names)
    if head is not None:
        h = check_index(head, result.num_heads, "head")
        if h not in heads:
            raise HeadmapError(f"head {h} was not captured: captured heads are {heads}")
        table, heads = {n: v[:, [heads.index(h)]] for n, v in table.items()}, [h]
    notes = (
        [f"statistics of the displayed ({result.normalization.caption}) weights, rows renormalized"]
        if not result.normalization.is_raw
        else []
    )
    fig = new_figure(5.2 * len(names) + 0.6, 4.4 + 0.04 * len(keys), [*notes, *result.notes, DEPTH_NOTE])
    for ax, name in zip(fig.subplots(1, len(names), squeeze=False)[0], names):
        values = table[name]  # [layer, head]
        if kind == "heatmap":
            image = ax.imshow(values.T, cmap=cmap, aspect="auto", interpolation="nearest")
            ax.set_yticks(range(len(heads)), [str(h) for h in heads], fontsize=label_font(3.5, len(heads), 1))
            ax.set_ylabel("head")
            fig.colorbar(image, ax=ax, shrink=0.85)
        else:
            _profile_lines(ax, values, heads)
        ax.set_xticks(
            range(len(keys)),
            [k.name for k in keys],
            rotation=90 if len(keys) > 8 else 0,
            fontsize=label_font(5.0, len(keys), 1),
        )
        ax.set_xlabel("layer (depth →)")
        ax.set_title(PROFILE_STATS[name], fontsize=10)
    if kind == "lines":
        # One legend outside the panels: inside, it would hide the very lines it names.
        handles, labels = fig.axes[0].get_legend_handles_labels()
        picked = (
            range(len(handles)) if len(heads) <= 16 else [len(handles) - 1]
        )  # many heads: name the mean only
        fig.legend(
            [handles[i] for i in picked], [labels[i] for i in picked], loc="outside right upper", fontsize=7
        )
    what = f"layer-depth profile of {len(heads)} head{'s' if len(heads) > 1 else ''}, {len(result.source)} {result.source.unit}s"
    fig.suptitle(
        _title(result.model, what, result.normalization.caption),
        fontsize=10,
        x=0.02,
        ha="left",
        parse_math=False,
    )
    return fig


def _profile_lines(ax: Axes, values: np.ndarray, heads: list[int]) -> None:
    colors = plt.get_cmap("tab20" if len(heads) > 10 else "tab10")
    for i, h in enumerate(heads):
        ax.plot(values[:, i], marker=".", lw=1, alpha=0.8, color=colors(i % colors.N), label=f"head {h}")
    if len(heads) > 1:
        counts = np.isfinite(values).sum(1)  # not nanmean: all-NaN layers (cross distances) would warn
        mean = np.where(counts > 0, np.nansum(values, 1) / np.maximum(counts, 1), np.nan)
        ax.plot(mean, color="black", lw=2.5, ls="--", label="mean over heads")
    ax.grid(alpha=0.3)
