"""The explanation view: attention beside attribution and occlusion, one row per method, on words."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from headmap.attribution import Explanation, explain
from headmap.errors import HeadmapError
from headmap.serve.payload import Axes, table_payload
from headmap.serve.views.base import Request, View
from headmap.serve.views.common import picture_key

if TYPE_CHECKING:
    from headmap.serve.workbench import Workbench

#: Methods offered, and those ticked at first: Integrated Gradients and flow cost many forwards,
#: so they are opt-in here (``headmap explain`` runs them by default).
OFFERED = (
    "attention",
    "calibrated",
    "rollout",
    "flow",
    "ig",
    "attention_x_gradient",
    "input_x_gradient",
    "occlusion",
)
FIRST = ("attention", "rollout", "attention_x_gradient", "input_x_gradient", "occlusion")


def controls() -> tuple[Any, ...]:
    import gradio as gr

    return (
        gr.Textbox(
            label="target token (decoders; empty: the model's top next token)",
            placeholder=" big",
            elem_id="hm-target",
        ),
        gr.Textbox(
            label="compare text (encoders without an LM head: explains the cosine to it)",
            value="A bag that is too small.",
            elem_id="hm-compare",
        ),
        gr.CheckboxGroup(list(OFFERED), value=list(FIRST), label="methods", elem_id="hm-methods"),
    )


def rows_scaled(scores: dict[str, np.ndarray]) -> np.ndarray:
    """``[method, word]``: each method's scores divided by its largest magnitude, so every row spans
    at most [-1, 1] on one colour scale (the methods' units differ)."""
    table = np.stack([np.asarray(v, dtype=np.float64) for v in scores.values()])
    peak = np.nanmax(np.abs(table), axis=1, keepdims=True)
    return np.divide(table, peak, out=np.zeros_like(table), where=peak > 0)


def explained(
    bench: Workbench, model: str, text: str, target: str | None, compare: str | None, methods: Sequence[str]
) -> Explanation:
    """``explain`` of ``text`` by ``methods`` on words, computed once per inputs and kept.

    Decoders explain ``target`` (None: their top next token), encoders the cosine to ``compare``;
    the other one is ignored."""
    methods = tuple(methods) or FIRST
    if unknown := [m for m in methods if m not in OFFERED]:
        raise HeadmapError(f"unknown methods {unknown}: choose from {', '.join(OFFERED)}")
    bench.count_tokens(model, text)
    for extra, what in ((target, "target"), (compare, "compare text")):
        if extra is not None:
            bench.check_text(extra, what)
    loaded = bench.model(model)
    if loaded.is_encoder_decoder or not _has_lm_head(loaded.model):
        target = None  # encoders explain the cosine to the compare text
    else:
        compare = None
    calibration = bench.calibration(model)
    if "calibrated" in methods and calibration is None:
        raise HeadmapError(
            f"calibrated needs head weights for {model}: start the dashboard with "
            f"--calibration {model}=FILE (from `headmap calibrate`)"
        )
    key = ("explain", model, text, target, compare, methods)
    return bench.derive(
        key,
        lambda: explain(
            loaded, text, target, compare=compare, methods=list(methods), calibration=calibration
        ).to_words(),
    )


def draw(bench: Workbench, request: Request, values: Sequence[Any]) -> dict[str, object]:

    target = str(values[0]) if len(values) > 0 and values[0] else None
    compare = str(values[1]) if len(values) > 1 and values[1] else None
    methods = tuple(values[2]) if len(values) > 2 and values[2] else FIRST
    found = explained(bench, request.model, request.text, target, compare, methods)
    scores = found.scores
    table = rows_scaled(scores)
    agreement = found.causal_agreement()
    lines = [
        f"F = {found.target.get('description', 'the explained output')} = {found.output:.4f}; each row is "
        "scaled by its largest magnitude (units differ between methods); red raises F, blue lowers it"
    ]
    if len(agreement):
        parts = [
            f"{row.method}: {row.spearman:+.2f}"
            for row in agreement.itertuples()
            if np.isfinite(row.spearman)
        ]
        lines.append("Spearman with occlusion, the causal reference, over the words: " + ", ".join(parts))
    lines += [line for line in found.caveats() if "not causation" not in line]
    return table_payload(
        picture_key(request, "explain", target, compare, ",".join(methods)),
        f"{found.model} · explanation of one output",
        table,
        list(scores),
        list(found.axis.tokens),
        Axes("method", "word", "score / max |score|"),
        lines,
        "RdBu_r",
    )


def _has_lm_head(model: object) -> bool:
    get = getattr(model, "get_output_embeddings", None)
    return callable(get) and get() is not None


VIEW = View(
    label="explanation",
    uses=frozenset(),
    draw=draw,
    controls=controls,
    help="Attention beside rollout, gradient attributions and occlusion (the causal reference), word by word, "
    "with their rank agreement: how far is each picture supported by what the output depends on?",
)
