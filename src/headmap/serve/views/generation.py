"""The generation view: generate from the text, then, per generated token, its attention to the
prompt's words beside each word's causal effect on it (occlusion), each row scaled to its peak."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from headmap.attribution import explain_generation
from headmap.errors import HeadmapError
from headmap.serve.payload import Axes, table_payload
from headmap.serve.views.base import Request, View
from headmap.serve.views.common import picture_key

if TYPE_CHECKING:
    from headmap.serve.workbench import Workbench

#: At most this many tokens from the dashboard: each costs a forward (and occlusion one per word).
MAX_NEW_TOKENS = 32


def controls() -> tuple[Any, ...]:
    import gradio as gr

    return (
        gr.Slider(1, MAX_NEW_TOKENS, value=8, step=1, label="tokens to generate", elem_id="hm-gen-tokens"),
        gr.Number(value=0, label="temperature (0: greedy)", elem_id="hm-gen-temperature"),
        gr.Number(value=0, label="seed", precision=0, elem_id="hm-gen-seed"),
        gr.Checkbox(value=False, label="chat template", elem_id="hm-gen-chat"),
    )


def _settings(values: Sequence[Any]) -> tuple[int, float | None, int, bool]:
    tokens = int(values[0]) if len(values) > 0 and values[0] else 8
    if not 1 <= tokens <= MAX_NEW_TOKENS:
        raise HeadmapError(f"tokens to generate must be 1 to {MAX_NEW_TOKENS}")
    temperature = float(values[1]) if len(values) > 1 and values[1] else 0.0
    if temperature < 0:
        raise HeadmapError("the temperature must be 0 (greedy) or above")
    seed = int(values[2]) if len(values) > 2 and values[2] else 0
    chat = bool(values[3]) if len(values) > 3 else False
    return tokens, (temperature or None), seed, chat


def draw(bench: Workbench, request: Request, values: Sequence[Any]) -> dict[str, object]:
    tokens, temperature, seed, chat = _settings(values)
    bench.count_tokens(request.model, request.text)
    loaded = bench.model(request.model)
    key = ("generate", request.model, request.text, tokens, temperature, seed, chat)
    report = bench.derive(
        key,
        lambda: explain_generation(
            loaded, request.text, max_new_tokens=tokens, temperature=temperature, seed=seed, chat=chat
        ),
    )
    t = report.trace
    rows, labels = [], []
    for i, token in enumerate(t.generated):
        shown = token.strip() or repr(token)
        for name, values_ in (
            ("attention", t.attention[i]),
            ("occlusion", t.occlusion[i] if t.occlusion is not None else None),
        ):
            if values_ is None:
                continue
            peak = np.nanmax(np.abs(values_)) if np.isfinite(values_).any() else 0.0
            rows.append(values_ / peak if peak > 0 else np.zeros_like(values_))
            labels.append(f"{i}: {shown} · {name}")
    agreement = t.agreement
    lines = [
        f"generated ({'greedy' if temperature is None else f'sampled at {temperature:g}, seed {seed}'}): {report.text!r}",
        "each row is scaled by its largest magnitude; attention: "
        + ", ".join(t.layers)
        + "; occlusion: the drop of the token's log-probability without the word (red: the word supports it)",
        "Spearman of attention with occlusion per token: "
        + ", ".join(
            f"{g.strip() or repr(g)} {a:+.2f}"
            for g, a in zip(t.generated, agreement, strict=True)
            if np.isfinite(a)
        ),
    ]
    return table_payload(
        picture_key(request, "generate", tokens, temperature, seed, chat),
        f"{t.model} · explained generation",
        np.stack(rows),
        labels,
        [w.strip() or repr(w) for w in t.words],
        Axes("generated token", "prompt word", "score / max |score|"),
        lines,
        "RdBu_r",
    )


VIEW = View(
    label="generation",
    uses=frozenset(),
    draw=draw,
    controls=controls,
    help="Generate from the text (a decoder, e.g. smollm2), then for every generated token: where it looked in "
    "the prompt (last layer, every head) beside each prompt word's causal effect on it (occlusion).",
)
