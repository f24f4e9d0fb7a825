"""The depth view: one per-head statistic for every layer and head, from a streamed capture; for an
image model, its patch statistics (grid distance, CLS and register shares...) of the uploaded image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from headmap.analysis.patch_stats import PATCH_LABELS, PATCH_STATS, patch_stats
from headmap.analysis.stats import STATS
from headmap.errors import HeadmapError
from headmap.render.profile import DEPTH_NOTE
from headmap.serve.inputs import Modality
from headmap.serve.payload import Axes, table_payload
from headmap.serve.views.base import Control, Request, View
from headmap.serve.views.common import item_of, picture_key

if TYPE_CHECKING:
    from headmap.serve.workbench import Workbench

#: What each statistic is (headmap.analysis.stats has the definitions).
MEANINGS = {
    "entropy": "mean row entropy -Σ a log a (nats); uniform over n keys is log n",
    "entropy_norm": "entropy / log(visible keys): 1 = uniform",
    "distance": "mean Σ a·|query − key|, in tokens",
    "first_share": "weight on the first token (a sink head has > 0.3)",
    "special_share": "weight on special tokens",
    "confidence": "mean of each row's largest weight (Voita et al. 2019)",
    "prev_share": "weight on the previous token",
    "diag_share": "weight on the query token itself",
}


def controls() -> tuple[Any, ...]:
    import gradio as gr

    choices = list(dict.fromkeys([*STATS, *PATCH_STATS]))  # text and image statistics; entropy is both
    return (gr.Dropdown(choices, value="entropy", label="statistic", elem_id="hm-stat"),)


def image_table(
    bench: Workbench, request: Request, name: str
) -> tuple[np.ndarray, list[str], list[str], str]:
    """An image model's patch statistic ``[layer, head]`` over the uploaded image, and its labels."""
    if name not in PATCH_STATS:
        raise HeadmapError(f"{name} is a statistic of text: for images choose from {', '.join(PATCH_STATS)}")
    item = item_of(bench, request)
    path = item.path
    assert path is not None  # an image model's input is its upload
    stats = bench.derive(
        ("patch-stats", request.model, *item.key),
        lambda: patch_stats(bench.model(request.model), [path]),
    )
    what = f"{name}: {PATCH_LABELS[name]}; every layer (rows) and head (columns) over {stats.units[0]} units of the image"
    return stats.stat(name), [key.title() for key in stats.layers], [f"head {h}" for h in stats.heads], what


def text_table(bench: Workbench, request: Request, name: str) -> tuple[np.ndarray, list[str], list[str], str]:
    """A text model's statistic ``[layer, head]`` of the text (streamed), and its labels."""
    if name not in STATS:
        raise HeadmapError(f"{name} is a statistic of images: for text choose from {', '.join(STATS)}")
    stats = bench.stats(request.model, request.text)
    what = f"{name}: {MEANINGS[name]}; every layer (rows) and head (columns) of {len(stats.tokens)} tokens"
    return stats.stat(name), [key.title() for key in stats.layers], [f"head {h}" for h in stats.heads], what


def draw(bench: Workbench, request: Request, values: Sequence[Any]) -> dict[str, object]:
    name = str(values[0]) if values else "entropy"
    if name not in STATS and name not in PATCH_STATS:
        raise HeadmapError(
            f"unknown statistic {name!r}: choose from {', '.join(dict.fromkeys([*STATS, *PATCH_STATS]))}"
        )
    image = bench.info(request.model).modality is Modality.IMAGE
    table, rows, cols, what = (image_table if image else text_table)(bench, request, name)
    caption = [f"{what}, raw weights", DEPTH_NOTE]
    return table_payload(
        picture_key(request, "stats", name),
        f"{request.model} · {name} by layer and head",
        table,
        rows,
        cols,
        Axes("layer", "head", name),
        caption,
        request.cmap,
    )


VIEW = View(
    label="layer-depth statistics",
    uses=frozenset({Control.CMAP}),
    draw=draw,
    controls=controls,
    help=(
        "One statistic per head across the depth of the model, from a streamed capture (no full maps kept); "
        "for an image model, its patch statistics over the uploaded image."
    ),
    takes=frozenset({Modality.TEXT, Modality.IMAGE}),
)
