"""The layer view: every head of one layer side by side on one colour scale."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from headmap.serve.payload import Panel, maps_payload
from headmap.serve.views.base import ANY_INPUT, Control, Request, View
from headmap.serve.views.common import describe, item_of, layer_at, map_axes, picture_key
from headmap.view.downsample import downsample_note

if TYPE_CHECKING:
    from headmap.serve.workbench import Workbench

#: Cells a side of each small panel; longer maps are max-pooled further (peaks kept).
PANEL_CELLS = 128


def draw(bench: Workbench, request: Request, values: Sequence[Any]) -> dict[str, object]:
    maps = bench.maps(request.model, item_of(bench, request), request.spec)
    layer = layer_at(maps, request.layer)
    coarser = max(1, math.ceil(max(layer.values.shape[-2:]) / PANEL_CELLS))
    pooled = layer.pooled(coarser)
    rows, cols = layer.labels(coarser)
    notes = list(layer.notes)
    if coarser > 1:
        # One line for the total pooling, replacing the display pooling's own line.
        n_q, n_k = len(layer.row_units), len(layer.col_units)
        notes = [n for n in notes if not n.startswith("downsampled")]
        notes.insert(0, downsample_note((n_q, n_k), layer.factors[0] * coarser, layer.factors[1] * coarser))
    what = f"all {len(layer.heads)} heads"
    panels = [Panel(f"head {h}", pooled[i]) for i, h in enumerate(layer.heads)]
    return maps_payload(
        picture_key(request, layer.key.name, "all"),
        f"{maps.model} · {layer.key.title()} · {what}",
        panels,
        rows,
        cols,
        map_axes(layer, coarser > 1 or layer.factors != (1, 1)),
        [describe(layer, what), *notes],
        request.cmap,
        target=200,
    )


VIEW = View(
    label="all heads of a layer",
    uses=frozenset({Control.LAYER, Control.WORDS, Control.MASK, Control.NORM, Control.CMAP}),
    draw=draw,
    takes=ANY_INPUT,
    help="Every head of the chosen layer on one colour scale: heads of one layer often split the work.",
)
