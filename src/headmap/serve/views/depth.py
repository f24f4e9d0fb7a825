"""The depth view: one per-head statistic for every layer and head, from a streamed capture."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from headmap.analysis.stats import STATS
from headmap.errors import HeadmapError
from headmap.render.profile import DEPTH_NOTE
from headmap.serve.payload import Axes, table_payload
from headmap.serve.views.base import Control, Request, View
from headmap.serve.views.common import picture_key

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

    return (gr.Dropdown(list(STATS), value="entropy", label="statistic", elem_id="hm-stat"),)


def draw(bench: Workbench, request: Request, values: Sequence[Any]) -> dict[str, object]:
    name = str(values[0]) if values else "entropy"
    if name not in STATS:
        raise HeadmapError(f"unknown statistic {name!r}: choose from {', '.join(STATS)}")
    stats = bench.stats(request.model, request.text)
    table = stats.stat(name)
    rows = [key.title() for key in stats.layers]
    cols = [f"head {h}" for h in stats.heads]
    caption = [
        f"{name}: {MEANINGS[name]}; every layer (rows) and head (columns) of {len(stats.tokens)} tokens, raw weights",
        DEPTH_NOTE,
    ]
    return table_payload(
        picture_key(request, "stats", name),
        f"{stats.model} · {name} by layer and head",
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
    help="One statistic per head across the depth of the model, from a streamed capture (no full maps kept).",
)
