"""Cross-attention of a speech model over time: each decoder token's row over the clip's encoder frames.

The picture is a ``[token, time]`` heatmap whose x-axis is in seconds (``Tokens.frames``), cut at the
end of the audible clip (the padding silence after it is left out, as Whisper's own timing does);
given token timings (e.g. from :func:`headmap.analysis.alignment.token_times`), each token's span is
outlined. Title and caption say what is shown, as every headmap picture does.

:func:`figure_head` and :func:`figure_grid` are what ``result.figure`` and ``result.render`` draw
with: a cross layer of an audio result over time, anything else as :mod:`headmap.render.patches`
draws it (``matrix=True`` keeps the ``[token, frame]`` heatmap).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.patches import Rectangle

from headmap.errors import HeadmapError
from headmap.render import patches
from headmap.render.html import escape
from headmap.render.report import save_figure
from headmap.render.static import check_cmap, new_figure
from headmap.result import CAUSATION_WARNING, AttentionResult, LayerKey, Stack

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["WordSpan", "figure_grid", "figure_head", "is_time_layer", "plot_cross_time", "plot_time"]


#: One word to outline in a time picture: its label, first and last row, start and end in seconds.
WordSpan = tuple[str, int, int, float, float]


def plot_time(
    values: np.ndarray,
    labels: Sequence[str],
    seconds: float,
    title: str,
    times: np.ndarray | None = None,
    words: Sequence[WordSpan] = (),
    cmap: str = "viridis",
    notes: Sequence[str] = (),
) -> Figure:
    """A ``[token, frame]`` map ``values`` with seconds along x (frames of ``seconds`` each), a row per
    ``labels`` entry; ``times`` ``[tokens, 2]``: token spans to outline; ``words``: word spans to
    outline (over their rows) and label."""
    frames = max(1, values.shape[-1])
    fig = new_figure(
        max(4.0, min(14.0, 2.0 + frames * 0.08)),
        max(2.0, 1.0 + 0.3 * len(labels)),
        [f"rows: target tokens; columns: encoder frames of {seconds:.2f} s, the audible part", *notes],
    )
    ax = fig.add_subplot()
    shown = ax.imshow(
        values,
        aspect="auto",
        cmap=check_cmap(cmap),
        interpolation="nearest",
        extent=(0.0, frames * seconds, len(labels) - 0.5, -0.5),
    )
    if times is not None:
        for row, (start, stop) in enumerate(np.asarray(times, dtype=np.float64)[: len(labels)]):
            ax.add_patch(Rectangle((start, row - 0.5), stop - start, 1.0, fill=False, color="white", lw=1.2))
    for word, first, last, start, stop in words:
        ax.add_patch(
            Rectangle((start, first - 0.5), stop - start, last - first + 1.0, fill=False, color="red", lw=1.6)
        )
        # Words are untrusted text: parse_math=False keeps a "$" from starting mathtext.
        ax.text(start, first - 0.45, word, color="white", fontsize=7, va="top", parse_math=False)
    # Tokens are untrusted text: a "$" would start matplotlib mathtext.
    ax.set_yticks(range(len(labels)), [label.replace("$", r"\$") for label in labels], fontsize=8)
    ax.set_xlabel("time (s)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(shown, ax=ax, label="attention weight")
    return fig


def plot_cross_time(
    result: AttentionResult,
    key: LayerKey | int | str,
    head: int | None = None,
    times: np.ndarray | None = None,
    cmap: str = "viridis",
) -> Figure:
    """Layer ``key``'s cross-attention (one ``head``, or the mean of the captured heads) of each target
    token over the audible frames, seconds along x; ``times`` ``[tokens, 2]``: spans to outline."""
    frames = result.source.frames
    if frames is None or result.target is None:
        raise HeadmapError(
            "a time picture needs an audio result with a target: capture a speech model's clip"
        )
    layer = result.layer(key)
    if layer.key.stack is not Stack.CROSS:
        raise HeadmapError(f"{layer.key.name} is no cross-attention layer: pick one such as cross.0")
    values = layer.head(head) if head is not None else layer.weights.mean(axis=0)
    audible = max(1, min(frames.audible, values.shape[-1]))
    labels = [result.target.tokens[r] for r in layer.rows]
    what = f"head {head}" if head is not None else f"mean of {len(layer.heads)} heads"
    title = f"{result.model}\n{layer.key.name} cross-attention over time · {what}"
    return plot_time(values[:, :audible], labels, frames.seconds, title, times, cmap=cmap)


def is_time_layer(result: AttentionResult, key: LayerKey | int | str) -> bool:
    """Whether ``key`` is a cross layer of an audio result with a target: one drawn over time."""
    if result.source.frames is None or result.target is None:
        return False
    return result.resolve(key).stack is Stack.CROSS


def _time_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options a time picture takes (``cmap``); the matrix-only ones (``max_tokens``...) dropped."""
    return {"cmap": options["cmap"]} if "cmap" in options else {}


def figure_head(result: AttentionResult, key: LayerKey | int | str, head: int, **options: Any) -> Figure:
    """``result.figure(layer, head)``: a cross layer of an audio result over time (``matrix=True``:
    the ``[token, frame]`` heatmap), else :func:`headmap.render.patches.figure_head`."""
    if is_time_layer(result, key) and not options.get("matrix", False):
        return plot_cross_time(result, key, head, **_time_options(options))
    return patches.figure_head(result, key, head, **options)


def figure_grid(result: AttentionResult, key: LayerKey | int | str, **options: Any) -> Figure:
    """``result.figure(layer, head=None)``: the mean of a cross layer's heads of an audio result over
    time (``matrix=True``: the grid of heatmaps), else :func:`headmap.render.patches.figure_grid`."""
    if is_time_layer(result, key) and not options.get("matrix", False):
        return plot_cross_time(result, key, None, **_time_options(options))
    return patches.figure_grid(result, key, **options)


def time_html(result: AttentionResult, key: LayerKey | int | str, head: int | None, **options: Any) -> str:
    """A self-contained HTML fragment of a cross layer over time (an embedded PNG: no other file),
    with the caveat under it."""
    fig = plot_cross_time(result, key, head, **_time_options(options))
    buffer = io.BytesIO()
    save_figure(fig, buffer, "png")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    alt = escape(f"{result.model}: {result.resolve(key).name} cross-attention over time")
    return (
        f'<figure class="headmap-time"><img alt="{alt}" src="data:image/png;base64,{data}">'
        f"<figcaption>{escape(CAUSATION_WARNING)}</figcaption></figure>"
    )
