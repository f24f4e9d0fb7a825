"""The image view: a head's attention (or the mean of a layer's heads, or the rollout) drawn over the
image an image model saw; hovering a patch makes it the query, clicking pins it (``assets/imageview.js``)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from headmap.errors import check_index
from headmap.render.image_view import image_payload
from headmap.serve.inputs import Modality
from headmap.serve.views.base import Control, Request, View
from headmap.serve.views.common import choice, item_of, picture_key

if TYPE_CHECKING:
    from headmap.serve.workbench import Workbench


class Heads(enum.Enum):
    """Which attention the picture draws."""

    ONE = "the chosen head"
    MEAN = "mean of the layer's heads"
    ROLLOUT = "rollout over all layers"


def controls() -> tuple[Any, ...]:
    import gradio as gr

    return (
        gr.Radio([h.value for h in Heads], value=Heads.ONE.value, label="draw", elem_id="hm-image-heads"),
    )


def draw(bench: Workbench, request: Request, values: Sequence[Any]) -> dict[str, object]:
    what = choice(Heads, values, Heads.ONE)
    # Rollout multiplies raw weights of every layer: it ignores the view options, as the caption says.
    result = bench.capture(request.model, item_of(bench, request))
    keys = [layer.key for layer in result.layers]
    key = keys[check_index(int(request.layer), len(keys), "layer")]
    head = None
    if what is Heads.ONE:
        head = result.layer(key).heads[check_index(int(request.head), result.num_heads, "head")]
    # A vision-language model's picture starts from its last text token: the one that reads the image.
    query = len(result.source) - 1 if bench.info(request.model).modality is Modality.IMAGE_TEXT else 0
    payload = image_payload(result, key, head, rollout=what is Heads.ROLLOUT, query=query, cmap=request.cmap)
    shown = "rollout" if what is Heads.ROLLOUT else key.name
    return {**payload, "key": picture_key(request, "image", shown, "mean" if head is None else head)}


VIEW = View(
    label="over the image",
    uses=frozenset({Control.LAYER, Control.HEAD, Control.CMAP}),
    draw=draw,
    controls=controls,
    help=(
        "Attention drawn over the image the model saw: hover a patch to look from it (click to pin it); "
        "CLS and registers, which have no place in the image, get bars beside it. Raw weights."
    ),
    takes=frozenset({Modality.IMAGE, Modality.IMAGE_TEXT}),
)
