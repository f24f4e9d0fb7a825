"""The interactive view of a result, for notebooks and as a standalone page: no server, no CDN.

Every captured map is embedded once, quantized (:mod:`headmap.render.embed`), and drawn on a
canvas by ``assets/heatmap.js``, plain JavaScript written for the project: layer and head
selectors, a word/token toggle, normalization presets, and a hover that shows the query token,
the key token and the value of the cell under the pointer. The word view and the presets are
computed in the page from the stored token-level values, with the same definitions as
:func:`headmap.view.aggregate_words` and :mod:`headmap.view.normalize`.

Precision: each map is stored in 16 bits over its own range when the whole page stays small, else
in 8 bits; the caption states the step (the largest error of a stored value is half of it).
Long maps are max-pooled, as everywhere in headmap, to at most ``max_tokens`` cells a side and
fewer when many maps must share the page; pooled maps offer only the presets that commute with
max-pooling (threshold, log) and no word toggle, and the caption says so.
"""

from __future__ import annotations

import hashlib
import html
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from headmap.errors import HeadmapError
from headmap.render.embed import Quantized, asset, colormap_lut, pack_quantized, quantize_ragged, script_json
from headmap.render.html import escape, summary_rows
from headmap.result import CAUSATION_WARNING, AttentionResult, LayerKey, LayerMap
from headmap.tokens import Tokens
from headmap.view.downsample import downsample_note, max_pool, pool_factor, pooled_labels, visible
from headmap.view.normalize import Log, Renorm, Step, Threshold, TopK, Window, parse_normalization
from headmap.view.words import word_groups, word_tokens

PRESETS = ("raw", "topk:3", "topk:3,renorm", "threshold:0.05", "log")
MAX_TOKENS = 256
#: Cells of all maps together above which each map is pooled further (~4M cells: ~1-2 MB deflated).
MAX_CELLS = 4_000_000
MIN_SIDE = 64
#: Deflated size up to which maps keep 16 bits; beyond it 8 bits keep the page a few hundred KB.
AUTO_16_BITS_BYTES = 160_000
PRECISIONS = ("auto", "8", "16")


def step_json(step: Step) -> dict[str, object]:
    """One normalization step as the page's script reads it."""
    if isinstance(step, TopK):
        return {"name": "topk", "k": step.k}
    if isinstance(step, Window):
        return {"name": "window", "w": step.width}
    if isinstance(step, Threshold):
        return {"name": "threshold", "t": step.value}
    if isinstance(step, Log):
        return {"name": "log"}
    if isinstance(step, Renorm):
        return {"name": "renorm"}
    raise TypeError(f"no script form for normalization step {step!r}")


def preset_json(spec: str) -> dict[str, object]:
    """A preset for the page: its spec, caption text, steps, and whether it commutes with max-pooling.

    Threshold and log are non-decreasing cell by cell, so max-pooling then applying them equals
    applying them then pooling; top-k, window and renorm look at whole rows or positions and do not.
    """
    norm = parse_normalization(spec)
    return {
        "spec": norm.spec(),
        "label": norm.caption,
        "steps": [step_json(s) for s in norm.steps],
        "log": norm.is_log,
        "pooledOk": all(isinstance(s, (Threshold, Log)) for s in norm.steps),
    }


def cell_side(result: AttentionResult, max_tokens: int) -> int:
    """Cells a side for every map: ``max_tokens``, fewer when all maps together exceed :data:`MAX_CELLS`."""
    count = sum(len(layer.heads) for layer in result.layers)
    fair = math.isqrt(MAX_CELLS // max(1, count))
    return max(1, min(max_tokens, max(MIN_SIDE, fair)))


def axis_json(tokens: Tokens, words: bool) -> dict[str, object]:
    """Labels of one token axis and, when the word toggle applies, each token's word."""
    out: dict[str, object] = {
        "unit": tokens.unit,
        "labels": [visible(t) for t in tokens.tokens],
        "special": list(tokens.special),
    }
    if words:
        groups = word_groups(tokens)
        names = word_tokens(tokens, groups)
        out["words"] = {
            "labels": [visible(t) for t in names.tokens],
            "of": [w for w, group in enumerate(groups) for _ in group],
        }
    return out


@dataclass(frozen=True)
class PooledLayer:
    """One layer ready to embed: ``values`` ``[head, row_cell, key_cell]`` and how it was pooled."""

    layer: LayerMap
    values: np.ndarray
    factors: tuple[int, int]


def pool_layer(layer: LayerMap, side: int) -> PooledLayer:
    n_q, n_k = layer.weights.shape[-2:]
    fq, fk = pool_factor(n_q, side), pool_factor(n_k, side)
    return PooledLayer(layer, max_pool(layer.weights, fq, fk), (fq, fk))


def layer_json(
    result: AttentionResult, pooled: PooledLayer, axes: list[Tokens], offset: int
) -> dict[str, object]:
    layer, (fq, fk) = pooled.layer, pooled.factors
    queries, keys = result.query_tokens(layer.key), result.key_tokens(layer.key)
    out: dict[str, object] = {
        "title": layer.key.title(),
        "name": layer.key.name,
        "q": axes.index(queries),
        "k": axes.index(keys),
        "rows": list(layer.rows),
        "heads": list(layer.heads),
        "offset": offset,
        "fq": fq,
        "fk": fk,
        "shape": list(pooled.values.shape[-2:]),
    }
    n_q, n_k = layer.weights.shape[-2:]
    notes = [downsample_note((n_q, n_k), fq, fk)]
    if len(layer.rows) != len(queries):
        notes.append(f"showing {len(layer.rows)} of {len(queries)} query rows")
    out["notes"] = [n for n in notes if n]
    if fq > 1 or fk > 1:  # the script labels unpooled maps itself; pooled ones get range labels
        rows = [visible(queries.tokens[r]) for r in layer.rows]
        out["rowLabels"] = (
            pooled_labels(rows, fq, width=16) if fq > 1 else [f"{t} [{r}]" for t, r in zip(rows, layer.rows)]
        )
        cols = [visible(t) for t in keys.tokens]
        out["colLabels"] = (
            pooled_labels(cols, fk, width=16) if fk > 1 else [f"{t} [{k}]" for k, t in enumerate(cols)]
        )
    return out


def choose_bits(maps: Sequence[np.ndarray], precision: str) -> int:
    """16 or 8 bits: ``"auto"`` keeps 16 while the deflated codes stay under :data:`AUTO_16_BITS_BYTES`."""
    if precision not in PRECISIONS:
        raise HeadmapError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        return int(precision)
    codes = quantize_ragged(maps, 16).codes
    return 16 if len(zlib.compress(codes.tobytes(), 6)) <= AUTO_16_BITS_BYTES else 8


def embedded_maps(
    result: AttentionResult, max_tokens: int, precision: str
) -> tuple[list[PooledLayer], Quantized]:
    """The pooled layers and their maps quantized in page order (layer by layer, head by head)."""
    side = cell_side(result, max_tokens)
    pooled = [pool_layer(layer, side) for layer in result.layers]
    maps = [p.values[h] for p in pooled for h in range(len(p.layer.heads))]
    return pooled, quantize_ragged(maps, choose_bits(maps, precision))


def view_payload(
    result: AttentionResult,
    layer: int | str | LayerKey | None = None,
    head: int | None = None,
    cmap: str = "viridis",
    max_tokens: int = MAX_TOKENS,
    precision: str = "auto",
    presets: Sequence[str] = PRESETS,
) -> dict[str, object]:
    """Everything the page's script needs, as plain JSON-able data (see ``assets/heatmap.js``).

    Maps are stored layer by layer, head by head; layer ``i``'s head ``j`` is map
    ``layers[i].offset + j`` and its cells start at ``starts[layers[i].offset + j]``.
    """
    if not result.layers:
        raise HeadmapError("this result holds no layers to show: capture at least one layer")
    if max_tokens < 1:
        raise HeadmapError(f"max_tokens must be at least 1, not {max_tokens}")
    pooled, quantized = embedded_maps(result, max_tokens, precision)
    axes = [result.source] + ([result.target] if result.target is not None else [])
    words = result.source.unit == "token" and not result.normalization.is_log
    counts = [len(p.layer.heads) for p in pooled]
    offsets = np.cumsum([0, *counts]).tolist()
    sizes = [int(np.prod(p.values.shape[-2:])) for p in pooled for _ in p.layer.heads]
    start_key = result.resolve(layer) if layer is not None else result.layers[0].key
    start_layer = result.keys.index(start_key) if start_key in result.keys else 0
    start_heads = result.layers[start_layer].heads
    offered = (
        [] if result.normalization.is_log else [p for p in presets if parse_normalization(p).spec() != "raw"]
    )
    return {
        "version": 1,
        "model": visible(result.model),
        "normalization": result.normalization.caption,
        "log": result.normalization.is_log,
        "warning": CAUSATION_WARNING,
        "notes": list(result.notes),
        "axes": [axis_json(tokens, words) for tokens in axes],
        "layers": [layer_json(result, p, axes, offsets[i]) for i, p in enumerate(pooled)],
        "data": pack_quantized(quantized, deflate=True),
        "starts": np.cumsum([0, *sizes[:-1]]).tolist(),
        "presets": [preset_json("raw"), *(preset_json(p) for p in offered)],
        "cmap": colormap_lut(cmap),
        "start": {"layer": start_layer, "head": start_heads.index(head) if head in start_heads else 0},
    }


def _details(result: AttentionResult) -> str:
    cells = "".join(
        f"<tr><th style='text-align:left'>{escape(a)}</th><td style='text-align:left'>{escape(b)}</td></tr>"
        for a, b in summary_rows(result)
    )
    return f"<details class='hmv-details'><summary>capture details</summary><table>{cells}</table></details>"


def interactive_html(
    result: AttentionResult,
    layer: int | str | LayerKey | None = None,
    head: int | None = None,
    cmap: str = "viridis",
    max_tokens: int = MAX_TOKENS,
    precision: str = "auto",
    presets: Sequence[str] = PRESETS,
) -> str:
    """An HTML fragment (for a notebook cell or any page) with the interactive view of ``result``.

    ``layer``/``head`` choose the map shown first; ``max_tokens`` caps the cells a side (longer
    maps are max-pooled); ``precision`` is ``"auto"``, ``"8"`` or ``"16"`` bits per stored value;
    ``presets`` are the normalization specs offered (see :mod:`headmap.view.normalize`).
    """
    payload = view_payload(result, layer, head, cmap, max_tokens, precision, presets)
    data = script_json(payload)
    # The same result gives the same fragment (so ``_repr_html_() == page()``); the script finds its
    # own container first, so two displays of one result in a notebook (equal ids) each mount.
    root = f"hmv-{hashlib.sha1(data.encode('utf-8')).hexdigest()[:12]}"
    fallback = (
        "The interactive heatmap needs JavaScript: in Jupyter, trust the notebook "
        "(or re-run the cell); elsewhere use result.render('map.png')."
    )
    return (
        f"<div class='hmv' id='{root}'>"
        f"<style>{asset('heatmap.css')}</style>"
        f"<div class='hmv-fallback'><p>{html.escape(fallback)}</p>"
        f"<p><em>{escape(CAUSATION_WARNING)}</em></p></div>"
        f"<script type='application/json' class='hmv-data'>{data}</script>"
        f"<script>(function () {{\n{asset('heatmap.js')}\n"
        "var own = document.currentScript && document.currentScript.parentNode;\n"
        f"headmapView().mountNotebook(own && own.id === {script_json(root)} ? own "
        f": document.getElementById({script_json(root)}));\n}})();</script>"
        f"{_details(result)}"
        "</div>"
    )


def notebook_view(result: AttentionResult) -> str:
    """``AttentionResult._repr_html_``: the interactive view with its defaults."""
    return interactive_html(result)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 16px; color: #222; }}</style>
</head>
<body>
{body}
</body>
</html>
"""


def interactive_page(
    result: AttentionResult,
    layer: int | str | LayerKey | None = None,
    head: int | None = None,
    **options: Any,
) -> str:
    """A full, self-contained HTML document with :func:`interactive_html` (no network at view time).

    ``options`` (``cmap``, ``max_tokens``, ``precision``, ``presets``) go to :func:`interactive_html`
    (an unknown one is a TypeError there).
    """
    title = f"{result.model} · attention maps"
    return _PAGE.format(title=escape(title), body=interactive_html(result, layer, head, **options))
