"""The single-head view: one head's ``[query, key]`` map, with token labels when they fit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from headmap.errors import check_index
from headmap.serve.payload import Panel, maps_payload
from headmap.serve.views.base import ANY_INPUT, Control, Request, View
from headmap.serve.views.common import describe, item_of, layer_at, map_axes, picture_key

if TYPE_CHECKING:
    from headmap.serve.workbench import Workbench


def draw(bench: Workbench, request: Request, values: Sequence[Any]) -> dict[str, object]:
    maps = bench.maps(request.model, item_of(bench, request), request.spec)
    layer = layer_at(maps, request.layer)
    head = check_index(int(request.head), maps.num_heads, "head")
    rows, cols = layer.labels()
    pooled = layer.factors != (1, 1)
    what = f"head {head}"
    return maps_payload(
        picture_key(request, layer.key.name, head),
        f"{maps.model} · {layer.key.title()} · {what}",
        [Panel(what, layer.values[layer.heads.index(head)])],
        rows,
        cols,
        map_axes(layer, pooled),
        [describe(layer, what), *layer.notes],
        request.cmap,
    )


VIEW = View(
    label="single head",
    uses=frozenset({Control.LAYER, Control.HEAD, Control.WORDS, Control.MASK, Control.NORM, Control.CMAP}),
    draw=draw,
    takes=ANY_INPUT,
    help="One head's map: rows are the query tokens (attending), columns the key tokens (attended to).",
)
