"""Cross-attention of a speech model over time: each decoder token's row over the clip's encoder frames.

The picture is a ``[token, time]`` heatmap whose x-axis is in seconds (``Tokens.frames``), cut at the
end of the audible clip (the padding silence after it is left out, as Whisper's own timing does);
given token timings (e.g. from :func:`headmap.analysis.alignment.token_times`), each token's span is
outlined. Title and caption say what is shown, as every headmap picture does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from matplotlib.patches import Rectangle

from headmap.errors import HeadmapError
from headmap.render.static import check_cmap, new_figure
from headmap.result import AttentionResult, LayerKey, Stack

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_cross_time"]


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
    values = values[:, :audible]
    # Tokens are untrusted text: a "$" would start matplotlib mathtext.
    labels = [result.target.tokens[r].replace("$", r"\$") for r in layer.rows]
    what = f"head {head}" if head is not None else f"mean of {len(layer.heads)} heads"
    fig = new_figure(
        max(4.0, min(14.0, 2.0 + audible * 0.08)),
        max(2.0, 1.0 + 0.3 * len(labels)),
        [f"rows: target tokens; columns: encoder frames of {frames.seconds:.2f} s, the audible part"],
    )
    ax = fig.add_subplot()
    end = audible * frames.seconds
    shown = ax.imshow(
        values,
        aspect="auto",
        cmap=check_cmap(cmap),
        interpolation="nearest",
        extent=(0.0, end, len(labels) - 0.5, -0.5),
    )
    if times is not None:
        for row, (start, stop) in enumerate(np.asarray(times, dtype=np.float64)[: len(labels)]):
            ax.add_patch(Rectangle((start, row - 0.5), stop - start, 1.0, fill=False, color="white", lw=1.2))
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("time (s)")
    ax.set_title(f"{result.model}\n{layer.key.name} cross-attention over time · {what}", fontsize=10)
    fig.colorbar(shown, ax=ax, label="attention weight")
    return fig
