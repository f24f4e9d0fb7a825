"""The interactive view of an image result: attention drawn over the image, hover a patch to look from it.

A *picture* is one ``[query, key]`` matrix over the image's units (a head, the mean of a layer's
heads, or the rollout over all layers): every row travels, so the page switches the query in the
browser. ``assets/imageview.js`` draws the image the model saw, the query's row over the patch grid
(scaled to that row's heaviest patch, as :func:`headmap.render.patches.plot_image_head` does), the
query outlined and the heaviest patch dashed, and bars for the prefix tokens (CLS, registers, a VLM's
text tokens), which have no place in the image. Hovering a patch makes it the query; a click pins
the query, and the hover then reads that row's weight on the patch under the pointer.

:func:`image_payload` is one picture for the dashboard (``mountPanel`` hands ``kind: "image"`` to
the script); :func:`image_page` is the notebook / standalone fragment with every captured layer and
head (and the rollout where every layer was captured) behind selectors.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from headmap.errors import HeadmapError
from headmap.render.embed import asset, colormap_lut, pack_quantized, quantize_ragged, script_json
from headmap.render.html import escape
from headmap.render.patches import MAX_BARS, image_html
from headmap.render.static import check_cmap
from headmap.result import CAUSATION_WARNING, AttentionResult, LayerKey, Stack
from headmap.tokens import PREFIX, Patches
from headmap.view.patches import patches_of, query_index, rollout_matrix

__all__ = ["MAX_CELLS", "Picture", "image_page", "image_payload", "pictures"]

#: Stored cells of all pictures of a page above which each head keeps only its prefix tokens' rows.
MAX_CELLS = 4_000_000
#: Stored cells up to which a page keeps 16 bits a value (8 beyond: the page stays a few MB at most).
SIXTEEN_BITS_CELLS = 1_000_000
HOVER_HELP = "hover a patch to look from it; click to pin that query, then hover to read its weights"


@dataclass(frozen=True)
class Picture:
    """One drawable matrix: ``values`` ``[row, unit]``, the rows of the query units ``rows``."""

    title: str  # "head 3", "mean of 4 heads", "rollout over 3 layers"
    layer: int  # position in the page's layer list (-1: the rollout, of every layer)
    rows: tuple[int, ...]
    values: np.ndarray


def _matrix(result: AttentionResult, key: LayerKey, head: int | None) -> tuple[tuple[int, ...], np.ndarray]:
    layer = result.layer(key)
    if len(result.key_tokens(key)) != len(result.source):
        raise HeadmapError(f"{key.name} does not attend over the image's units: pick a self-attention layer")
    values = layer.weights.mean(0) if head is None else layer.head(head)
    return tuple(layer.rows), np.asarray(values, dtype=np.float64)


def can_roll_out(result: AttentionResult) -> bool:
    try:
        rollout_matrix(result)
    except HeadmapError:
        return False
    return True


def pictures(result: AttentionResult, budget: int = MAX_CELLS) -> tuple[list[Picture], list[str]]:
    """Every captured layer's heads and their mean, and the rollout where it can be computed, with the
    notes on what had to be left out to keep the page within ``budget`` stored cells."""
    patches = patches_of(result)
    keys = [k for k in result.keys if len(result.key_tokens(k)) == len(result.source)]
    if not keys:
        raise HeadmapError("no captured layer attends over the image's units: capture self-attention layers")
    found: list[Picture] = []
    for position, key in enumerate(keys):
        heads = result.layer(key).heads
        rows, mean = _matrix(result, key, None)
        found.append(Picture(f"mean of {len(heads)} heads", position, rows, mean))
        found.extend(Picture(f"head {h}", position, *_matrix(result, key, h)) for h in heads)
    if can_roll_out(result):
        n = len(result.source)
        found.append(Picture(f"rollout over {len(keys)} layers", -1, tuple(range(n)), rollout_matrix(result)))
    notes: list[str] = []
    if sum(p.values.size for p in found) > budget:
        # Heads keep the rows that matter most without hovering: the prefix tokens' (CLS, registers).
        keep = tuple(i for i in (patches.prefix or (0,)) if i < len(result.source))
        found = [p if not p.title.startswith("head ") else _only_rows(p, keep) for p in found]
        named = ", ".join(result.source.tokens[i] for i in keep)
        notes.append(
            f"each head keeps only the rows of {named} here (every row of every head would exceed "
            f"{budget:,} stored values): hover chooses the query in the means and the rollout; capture "
            "fewer layers (layers=[...]) to hover every head"
        )
    return found, notes


def _only_rows(picture: Picture, keep: tuple[int, ...]) -> Picture:
    index = [picture.rows.index(r) for r in keep if r in picture.rows]
    return Picture(picture.title, picture.layer, tuple(picture.rows[i] for i in index), picture.values[index])


def _png(patches: Patches) -> str:
    pixels = patches.pixels[..., 0] if patches.pixels.shape[2] == 1 else patches.pixels
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _units(result: AttentionResult, cmap: str) -> dict[str, object]:
    """What every picture of one result shares: the image, the units and where they sit."""
    patches = patches_of(result)
    return {
        "labels": list(result.source.tokens),
        "cells": [None if cell == PREFIX else list(cell) for cell in patches.cells],
        "grid": list(patches.grid),
        "prefix": list(patches.prefix),
        "pixels": _png(patches),
        "size": [int(patches.pixels.shape[0]), int(patches.pixels.shape[1])],
        "maxBars": MAX_BARS,
        "cmap": colormap_lut(check_cmap(cmap)),
        "model": result.model,
        "normalization": result.normalization.caption,
        "warning": CAUSATION_WARNING,
    }


def _precision(bits: int, step: float) -> str:
    return f"values stored in {bits} bits over each picture's range (step {step:.3g}); the hover shows them to 4 decimals"


def image_payload(
    result: AttentionResult,
    key: LayerKey | int | str | None,
    head: int | None,
    *,
    rollout: bool = False,
    query: int | str = 0,
    cmap: str = "inferno",
) -> dict[str, object]:
    """One picture for the dashboard: layer ``key``'s ``head`` (None: the mean of its captured heads)
    or, with ``rollout``, the rollout over all layers; every row, in 16 bits (``data.codes`` are the
    bytes :func:`headmap.serve.payload.finish` publishes), starting from unit ``query``."""
    grid = patches_of(result).grid
    start = query_index(result.source, query)
    if rollout:
        rows, values = tuple(range(len(result.source))), rollout_matrix(result)
        what = f"rollout over {result.num_layers.get(Stack.SELF, 0)} layers"
        shown = "rollout"
    else:
        resolved = result.resolve(key if key is not None else result.keys[0])
        rows, values = _matrix(result, resolved, head)
        heads = result.layer(resolved).heads
        what = f"{resolved.title()} · " + (
            f"head {head}" if head is not None else f"mean of {len(heads)} heads"
        )
        shown = resolved.name
    quantized = quantize_ragged([values], 16)
    return {
        "kind": "image",
        "key": f"{result.model}|{shown}|{head}",
        "title": f"{result.model} · {what}",
        **_units(result, cmap),
        "pictures": [
            {"title": what, "layer": 0, "rows": list(rows), "start": 0, "shape": list(values.shape)}
        ],
        "layers": [],
        "picture": 0,
        "query": start if start in rows else rows[0],
        "data": {
            "bits": 16,
            "lo": quantized.lo.tolist(),
            "hi": quantized.hi.tolist(),
            "codes": quantized.codes.tobytes(),
        },
        "caption": [
            f"{what} · from the query unit's row over the {grid[0]}x{grid[1]} patch grid · "
            f"normalization: {result.normalization.caption}",
            HOVER_HELP,
            _precision(16, float(quantized.step.max())),
            CAUSATION_WARNING,
        ],
    }


def _page_data(
    result: AttentionResult,
    layer: LayerKey | int | str | None,
    head: int | None,
    query: int | str,
    cmap: str,
    rollout: bool,
) -> dict[str, object]:
    found, notes = pictures(result)
    keys = [k for k in result.keys if len(result.key_tokens(k)) == len(result.source)]
    cells = sum(p.values.size for p in found)
    bits = 16 if cells <= SIXTEEN_BITS_CELLS else 8
    quantized = quantize_ragged([p.values for p in found], bits)
    starts = np.cumsum([0, *(p.values.size for p in found)])[:-1]
    first_key = result.resolve(layer) if layer is not None else keys[0]
    first_layer = keys.index(first_key) if first_key in keys else 0
    wanted = f"head {head}" if head is not None else "mean of"
    first = next((i for i, p in enumerate(found) if p.layer == first_layer and p.title.startswith(wanted)), 0)
    return {
        **_units(result, cmap),
        "pictures": [
            {
                "title": p.title,
                "layer": p.layer,
                "rows": list(p.rows),
                "start": int(s),
                "shape": list(p.values.shape),
            }
            for p, s in zip(found, starts)
        ],
        "layers": [k.title() for k in keys],
        "picture": first,
        "query": query_index(result.source, query),
        "data": pack_quantized(quantized, deflate=True),
        "notes": [*notes, *result.notes],
        "precision": _precision(bits, float(quantized.step.max())),
        "help": HOVER_HELP,
    }


def image_page(
    result: AttentionResult,
    layer: LayerKey | int | str | None = None,
    head: int | None = None,
    query: int | str = 0,
    cmap: str = "inferno",
    rollout: bool = False,
) -> str:
    """A self-contained HTML fragment (notebook cell or page) with the interactive image view of
    ``result``: layer and head selectors (each head, their mean, the rollout), the image with the
    query's row over it, prefix tokens' bars; a static picture stands in where scripts do not run.
    ``layer``/``head`` (None: the mean of the heads) or ``rollout`` pick the first picture."""
    data = script_json(_page_data(result, layer, head, query, cmap, rollout))
    root = f"hmi-{hashlib.sha1(data.encode('utf-8')).hexdigest()[:12]}"
    # One picture, not a grid of every head: the stand-in stays small (a ViT-B grid PNG is megabytes).
    key = result.resolve(layer) if layer is not None else result.keys[0]
    shown = head if head is not None else result.layer(key).heads[0]
    fallback = image_html(result, key, shown, query=query, cmap=cmap, rollout=rollout)
    note = (
        "The interactive view needs JavaScript (in Jupyter, trust the notebook); this is its static picture."
    )
    return (
        f"<div class='hmv hmi' id='{root}'>"
        f"<style>{asset('heatmap.css')}</style>"
        f"<div class='hmv-fallback'><p>{html.escape(note)}</p>{fallback}"
        f"<p><em>{escape(CAUSATION_WARNING)}</em></p></div>"
        f"<script type='application/json' class='hmi-data'>{data}</script>"
        f"<script>(function () {{\n{asset('heatmap.js')}\n{asset('imageview.js')}\n"
        "var own = document.currentScript && document.currentScript.parentNode;\n"
        f"headmapImage().mountImage(own && own.id === {script_json(root)} ? own "
        f": document.getElementById({script_json(root)}));\n}})();</script>"
        "</div>"
    )
