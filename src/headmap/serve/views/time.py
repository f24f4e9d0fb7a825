"""The time view: a speech model's cross-attention, each transcript token over the clip's seconds.

By default the picture is the mean of the heads best aligned with time (found by dynamic time
warping, as Whisper's own word timestamps find them; :mod:`headmap.analysis.alignment`), with each
token's span from the alignment path in the caption; or the chosen cross layer and head.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from headmap.analysis.alignment import alignment_heads, token_times
from headmap.errors import HeadmapError, check_index
from headmap.result import AttentionResult, Stack
from headmap.serve.inputs import Modality
from headmap.serve.payload import Axes, Panel, maps_payload
from headmap.serve.views.base import Control, Request, View
from headmap.serve.views.common import item_of, picture_key
from headmap.view.downsample import visible

if TYPE_CHECKING:
    from headmap.serve.workbench import Workbench

#: Alignment heads averaged for the default picture.
TOP_HEADS = 5


class Source(enum.Enum):
    ALIGNMENT = "the best alignment heads (mean)"
    CHOSEN = "the chosen cross layer and head"


def controls() -> tuple[Any, ...]:
    import gradio as gr

    return (
        gr.Radio(
            [s.value for s in Source], value=Source.ALIGNMENT.value, label="draw", elem_id="hm-time-heads"
        ),
    )


def chosen(values: Sequence[Any]) -> Source:
    text = str(values[0]) if values and values[0] else Source.ALIGNMENT.value
    for option in Source:
        if option.value == text:
            return option
    raise HeadmapError(f"unknown choice {text!r}: choose one of {', '.join(s.value for s in Source)}")


def cross_rows(result: AttentionResult, source: Source, layer: int, head: int) -> tuple[np.ndarray, str]:
    """``[tokens, frames]`` cross-attention the picture shows (all frames) and what it is."""
    crosses = [m for m in result.layers if m.key.stack is Stack.CROSS]
    if not crosses:
        raise HeadmapError(f"{result.model} has no cross-attention: the time view needs a speech model")
    if source is Source.ALIGNMENT:
        best = alignment_heads(result, top=TOP_HEADS)
        rows = np.mean([result.layer(a.key).head(a.head) for a in best], axis=0)
        names = ", ".join(f"{a.key.name} h{a.head} ({a.score:.2f})" for a in best)
        return rows, f"mean of the {len(best)} heads best aligned with time (score): {names}"
    keys = [m.key for m in result.layers]
    key = keys[check_index(layer, len(keys), "layer")]
    if key.stack is not Stack.CROSS:
        positions = ", ".join(str(keys.index(m.key)) for m in crosses)
        raise HeadmapError(
            f"layer {layer} is {key.name}, not a cross-attention layer: move the layer slider to one of {positions}"
        )
    index = check_index(head, result.num_heads, "head")
    return result.layer(key).head(index), f"{key.title()} · head {index}"


def draw(bench: Workbench, request: Request, values: Sequence[Any]) -> dict[str, object]:
    source = chosen(values)
    result = bench.capture(request.model, item_of(bench, request))
    frames, target = result.source.frames, result.target
    assert frames is not None and target is not None  # a speech model's capture has both
    rows, what = cross_rows(result, source, int(request.layer), int(request.head))
    audible = max(1, min(frames.audible, rows.shape[-1]))
    shown = rows[:, :audible]
    tokens = [visible(t) for t in target.tokens]
    times = (
        token_times(shown, frames.seconds) if len(tokens) > 1 else np.array([[0.0, audible * frames.seconds]])
    )
    spans = "; ".join(f"{t} {a:.2f}-{b:.2f} s" for t, (a, b) in zip(tokens, times))
    payload = maps_payload(
        picture_key(request, "time", source.name, int(request.layer), int(request.head)),
        f"{result.model} · cross-attention over time",
        [Panel(what.split(":")[0], shown.astype(np.float32))],
        [f"{t} [{i}]" for i, t in enumerate(tokens)],
        [f"{j * frames.seconds:.2f} s" for j in range(audible)],
        Axes("transcript token", "time", "attention weight"),
        [
            f"{what}; rows: transcript tokens, columns: encoder frames of {frames.seconds:.2f} s "
            f"(the {audible} audible ones), raw weights",
            f"token spans along the alignment path (dynamic time warping): {spans}",
        ],
        request.cmap,
        target=900,
    )
    return {**payload, "square": False}


VIEW = View(
    label="over time",
    uses=frozenset({Control.LAYER, Control.HEAD, Control.CMAP}),
    draw=draw,
    controls=controls,
    help=(
        "A speech model's cross-attention: each transcript token (type it in the text box) over the "
        "clip's seconds; by default the heads best aligned with time, as Whisper's timestamps use them."
    ),
    takes=frozenset({Modality.AUDIO}),
)
