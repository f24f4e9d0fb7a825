"""The time view: a speech model's cross-attention, each transcript token over the clip's seconds.

By default the picture is the mean of the heads best aligned with time (found by dynamic time
warping, as Whisper's own word timestamps find them; :func:`headmap.analysis.align_result.align_result`),
with each word's span along the alignment path in the caption; or the chosen cross layer and head.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from headmap.analysis.align_result import Alignment, align_result
from headmap.errors import HeadmapError, check_index
from headmap.result import Stack
from headmap.serve.inputs import Modality
from headmap.serve.payload import Axes, Panel, maps_payload
from headmap.serve.views.base import Control, Request, View
from headmap.serve.views.common import choice, item_of, picture_key
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


def alignment(bench: Workbench, request: Request, source: Source) -> Alignment:
    """The alignment the picture shows: of the best heads, or of the chosen cross layer and head."""
    result = bench.capture(request.model, item_of(bench, request))
    if not any(m.key.stack is Stack.CROSS for m in result.layers):
        raise HeadmapError(f"{result.model} has no cross-attention: the time view needs a speech model")
    if source is Source.ALIGNMENT:
        return align_result(result, top=TOP_HEADS)
    keys = [m.key for m in result.layers]
    key = keys[check_index(int(request.layer), len(keys), "layer")]
    if key.stack is not Stack.CROSS:
        positions = ", ".join(str(i) for i, k in enumerate(keys) if k.stack is Stack.CROSS)
        raise HeadmapError(
            f"layer {request.layer} is {key.name}, not a cross-attention layer: "
            f"move the layer slider to one of {positions}"
        )
    return align_result(result, heads=[(key, check_index(int(request.head), result.num_heads, "head"))])


def draw(bench: Workbench, request: Request, values: Sequence[Any]) -> dict[str, object]:
    source = choice(Source, values, Source.ALIGNMENT)
    found = alignment(bench, request, source)
    heads = ", ".join(f"{h.key.name} h{h.head} ({h.score:.2f})" for h in found.heads)
    what = (
        f"mean of the {len(found.heads)} heads best aligned with time (score): {heads}"
        if found.found
        else f"{found.heads[0].key.title()} · head {found.heads[0].head} (alignment score {found.heads[0].score:.2f})"
    )
    tokens = [visible(t) for t in found.tokens]
    words = "; ".join(f"{w.word} {w.start:.2f}-{w.end:.2f} s" for w in found.words) or "none (no words)"
    audible = found.weights.shape[-1]
    payload = maps_payload(
        picture_key(request, "time", source.name, int(request.layer), int(request.head)),
        f"{found.model} · cross-attention over time",
        [Panel("alignment heads" if found.found else "chosen head", found.weights.astype(np.float32))],
        [f"{t} [{i}]" for i, t in enumerate(tokens)],
        [f"{j * found.seconds:.2f} s" for j in range(audible)],
        Axes("transcript token", "time", "attention weight"),
        [
            f"{what}; rows: transcript tokens, columns: encoder frames of {found.seconds:.2f} s "
            f"(the {audible} audible ones), raw weights",
            f"word spans along the alignment path (dynamic time warping, as Whisper's word timestamps): {words}",
            *found.notes(),
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
