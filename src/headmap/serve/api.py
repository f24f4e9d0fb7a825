"""The dashboard's programmatic API: what ``headmap serve`` answers besides its page, as plain data.

Each function takes the server's :class:`~headmap.serve.workbench.Workbench` (so the API and the
page share the loaded models, caches and limits) and everything else from the request itself:
the model, layer and head are checked against the *requested* model, never against what a browser
tab chose before. Results are JSON-ready dicts (lists, numbers, strings; NaN as None); the keys are
documented per function and in the README ("Programmatic API"). Errors are
:class:`~headmap.errors.HeadmapError` with one line naming the fix; :mod:`headmap.serve.endpoints`
turns them into Gradio errors.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np

from headmap.capture import capture as capture_maps
from headmap.errors import HeadmapError, check_index
from headmap.render.report import json_number, json_numbers
from headmap.result import CAUSATION_WARNING, AttentionResult
from headmap.serve.display import ViewSpec, estimate_bytes
from headmap.serve.views.explanation import OFFERED, explained
from headmap.serve.views.rag import checked_report
from headmap.serve.workbench import Workbench

#: Most values one ``capture`` answer carries (1024 x 1024 float32: 4 MB as base64).
API_MAX_CELLS = 1 << 20
ENCODINGS = ("list", "base64")


def models(bench: Workbench) -> dict[str, Any]:
    """Every model the server offers (each loaded on first ask): layers, heads and length limits.

    Keys: ``default`` (the model selected first) and ``models``, a list of ``{name, layers (layer
    names, in slider order), num_layers, num_heads, position_limit (the model's own longest text in
    tokens, or None), max_tokens (the longest text this server takes for it), max_text_chars}``.
    """
    out = []
    for name in bench.model_names:
        info = bench.info(name)
        limit = info.position_limit
        out.append(
            {
                "name": name,
                "layers": [key.name for key in info.keys],
                "num_layers": len(info.keys),
                "num_heads": info.num_heads,
                "position_limit": limit,
                "max_tokens": bench.max_tokens if limit is None else min(limit, bench.max_tokens),
                "max_text_chars": bench.max_text_chars,
                "input": info.modality.value,
            }
        )
    return {"default": bench.default_model, "models": out}


def capture(
    bench: Workbench,
    model: str,
    text: str,
    layer: int,
    head: int,
    *,
    words: bool = False,
    mask_special: bool = False,
    mask_first: bool = False,
    renormalize: bool = False,
    norm: str = "raw",
    encoding: str = "list",
) -> dict[str, Any]:
    """One head's attention map of ``text``: ``[query, key]`` weights, with the view options applied
    as the page applies them (word view, then hiding special/first tokens, then normalization).

    ``layer``: position in the model's layer list (``models()``'s ``layers``; negative counts from
    the end); ``head``: head number. Keys: ``model, layer, layer_name, head, unit ("token" or
    "word"), rows (query labels), cols (key labels), shape [rows, cols], dtype ("float32"),
    normalization, notes, warning`` and ``values`` (nested lists, ``encoding="list"``) or
    ``values_base64`` (``encoding="base64"``: the float32 little-endian bytes in row-major order;
    ``numpy.frombuffer(base64.b64decode(s), "<f4").reshape(shape)``).
    """
    if encoding not in ENCODINGS:
        raise HeadmapError(f"unknown encoding {encoding!r}: choose one of {', '.join(ENCODINGS)}")
    info = bench.info(model)
    position = check_index(int(layer), len(info.keys), "layer")
    number = check_index(int(head), info.num_heads, "head")
    spec = ViewSpec(
        words=bool(words),
        mask_special=bool(mask_special),
        mask_first=bool(mask_first),
        renormalize=bool(renormalize),
        norm=str(norm or "raw"),
    )
    tokens = bench.count_tokens(model, text)
    if tokens * tokens > API_MAX_CELLS:
        side = int(API_MAX_CELLS**0.5)
        raise HeadmapError(
            f"the text has {tokens} tokens, a {tokens} x {tokens} map; the API returns at most {side} x {side}: "
            "shorten the text"
        )
    key = info.keys[position]
    result = spec.apply(_one_layer(bench, model, text, position))
    layer_map = result.layers[0]
    values = np.ascontiguousarray(layer_map.head(number), dtype="<f4")
    rows, cols = result.row_tokens(layer_map), result.key_tokens(key)
    found: dict[str, Any] = {
        "model": model,
        "layer": position,
        "layer_name": key.name,
        "head": number,
        "unit": rows.unit,
        "rows": list(rows.tokens),
        "cols": list(cols.tokens),
        "shape": list(values.shape),
        "dtype": "float32",
        "normalization": spec.norm,
        "notes": list(result.notes),
        "warning": CAUSATION_WARNING,
    }
    if encoding == "base64":
        found["values_base64"] = base64.b64encode(values.tobytes()).decode("ascii")
    else:
        found["values"] = [json_numbers(row) for row in values]
    return found


def _one_layer(bench: Workbench, model: str, text: str, position: int) -> AttentionResult:
    """The capture of one layer: from the server's cached full capture where it keeps one (the page
    shares it), else that layer alone, so a long text costs one layer's maps and not the model's."""
    info = bench.info(model)
    key = info.keys[position]
    tokens = bench.count_tokens(model, text)
    if estimate_bytes(len(info.keys) * info.num_heads, tokens) <= bench.full_capture_bytes:
        full = bench.capture(model, text)
        return full.with_layers([full.layer(key)])
    result = capture_maps(bench.model(model), text, layers=[key.name])
    assert isinstance(result, AttentionResult)  # one text in, one result out
    return result


def stats(bench: Workbench, model: str, text: str) -> dict[str, Any]:
    """Per-head statistics of ``text`` (streamed: any length up to the server's limits).

    Keys (``HeadStats.to_dict``): ``model, tokens (count), layers (names), head_numbers,
    statistics (names), notes, warning`` and ``heads``: one record per (layer, head) with
    ``layer, head`` and every statistic (None where undefined).
    """
    bench.info(model)
    return bench.stats(model, text).to_dict()


def explain(
    bench: Workbench,
    model: str,
    text: str,
    *,
    target: str = "",
    compare: str = "",
    methods: Sequence[str] = (),
) -> dict[str, Any]:
    """Word scores of one output by several methods (``headmap.explain(...).to_words()``).

    Decoders explain ``target`` (empty: their top next token); encoders without an LM head the
    cosine to ``compare``. ``methods``: any of :data:`~headmap.serve.views.explanation.OFFERED`
    (empty: attention, rollout, the two gradient methods and occlusion). Keys: ``model, unit
    ("word"), words, target (what was explained), output (its value), methods, scores ({method:
    [word] scores}), flags, agreement_with_occlusion (records: method, spearman, kendall, n),
    caveats, warning``.
    """
    unknown = [m for m in methods if m not in OFFERED]
    if unknown:
        raise HeadmapError(f"unknown methods {unknown}: choose from {', '.join(OFFERED)}")
    found = explained(bench, model, text, target or None, compare or None, tuple(methods))
    agreement = found.causal_agreement()
    return {
        "model": found.model,
        "unit": found.unit,
        "words": list(found.axis.tokens),
        "target": found.target,
        "output": json_number(found.output),
        "methods": list(found.scores),
        "scores": {name: json_numbers(values) for name, values in found.scores.items()},
        "flags": dict(found.flags),
        "agreement_with_occlusion": [
            {
                "method": str(row["method"]),
                "spearman": json_number(row["spearman"]),
                "kendall": json_number(row["kendall"]),
                "n": int(row["n"]),
            }
            for row in agreement.to_dict("records")
        ],
        "caveats": found.caveats(),
        "warning": CAUSATION_WARNING,
    }


def rag(
    bench: Workbench, model: str, question: str, chunks: Sequence[str], answer: str = ""
) -> dict[str, Any]:
    """Which retrieved chunk the answer uses: attention mass per chunk beside the causal check.

    ``answer`` empty: the model's own greedy answer (at most 32 tokens). Keys: ``model, question,
    answer, answer_source, answer_tokens, answer_logprob, spearman (attention vs removal), verdict,
    caveats, warning`` and ``chunks``: one record per chunk with ``id, text, attention,
    calibrated_attention, logprob_drop (the answer's log p lost without it), flag,
    attention_by_answer_token``.
    """
    if isinstance(chunks, str) or not all(isinstance(c, str) for c in chunks):
        raise HeadmapError("chunks must be a list of strings, one per retrieved chunk")
    report = checked_report(bench, model, question, list(chunks), answer or None)
    full = report.to_dict()
    kept = (
        "id",
        "text",
        "attention",
        "calibrated_attention",
        "logprob_drop",
        "flag",
        "attention_by_answer_token",
    )
    return {
        **{
            k: full[k]
            for k in ("model", "question", "answer", "answer_source", "answer_tokens", "answer_logprob")
        },
        "spearman": full["spearman"],
        "verdict": full["verdict"],
        "chunks": [{k: chunk[k] for k in kept} for chunk in full["chunks"]],
        "caveats": list(full["caveats"]),
        "warning": CAUSATION_WARNING,
    }
