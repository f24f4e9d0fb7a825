"""The named API endpoints of ``headmap serve``: ``/models``, ``/capture``, ``/stats``, ``/explain``, ``/rag``.

Each endpoint is a typed function registered with ``gr.api``: Gradio derives the parameters' names,
types and defaults from its signature and its description from its docstring, so ``view_api()`` of
``gradio_client`` and ``/gradio_api/info`` list exactly these five, with named parameters and JSON
results (the page's own events are private). The numbers come from :mod:`headmap.serve.api`.

Bad input (an unknown model, a layer out of the model's range, a text too long) is one line to the
client (a ``gr.Error``, which Gradio shows however ``show_error`` is set) and one warning line in
the server's log, never a traceback. No ``from __future__ import annotations`` here: Gradio reads
the return annotation as it stands, and a string would not be a type.
"""

import html
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import gradio as gr

from headmap.errors import HeadmapError
from headmap.serve import api
from headmap.serve.workbench import Workbench

log = logging.getLogger("headmap.serve")

T = TypeVar("T")
#: The one concurrency group of every computing event, the page's and the API's: ``--max-concurrent``
#: bounds them together.
CONCURRENCY_ID = "headmap-compute"
NAMES = ("models", "capture", "stats", "explain", "rag")
#: ``explain``'s default methods: none named, the view's first set (never mutated).
NO_METHODS: list[str] = []


def one_line(message: str) -> str:
    """``message`` on one line (a multi-line library message would split the log and the client's error)."""
    return " ".join(message.split())


def guarded(endpoint: str, compute: Callable[[], T]) -> T:
    """``compute()``, with bad input turned into one ``gr.Error`` line and one log line."""
    try:
        return compute()
    except (HeadmapError, ValueError, TypeError) as exc:
        message = one_line(str(exc)) or type(exc).__name__
        log.warning("%s: bad request: %s", endpoint, message)
        # Gradio may show the message as HTML in a page: the request's own text stays text.
        raise gr.Error(html.escape(message, quote=False), print_exception=False) from None


def register(bench: Workbench, concurrency_limit: int) -> None:
    """Add the API endpoints to the Blocks being built (call inside ``with gr.Blocks()``)."""
    default = bench.default_model

    def models() -> dict[str, Any]:
        """Every model this server offers: name, layers (names), num_layers, num_heads, position_limit
        (the model's own longest text in tokens, or null), max_tokens (the longest text this server
        takes for it), max_text_chars. Keys: default, models."""
        return guarded("models", lambda: api.models(bench))

    def capture(
        text: str,
        model: str = default,
        layer: int = 0,
        head: int = 0,
        words: bool = False,
        mask_special: bool = False,
        mask_first: bool = False,
        renormalize: bool = False,
        norm: str = "raw",
        encoding: str = "list",
    ) -> dict[str, Any]:
        """One head's attention map [query, key] of text. layer: position in the model's layer list
        (negative from the end); head: head number; words: word view; mask_special / mask_first: hide
        special tokens / the first token (renormalize: rows sum to 1 again); norm: raw, topk:K,
        window:W, threshold:T, log (join with commas); encoding: list (values as nested lists) or
        base64 (values_base64: float32 little-endian, row-major, of the given shape). Keys: model,
        layer, layer_name, head, unit, rows, cols, shape, dtype, normalization, notes, warning and
        values or values_base64. Attention is correlation, not causation."""
        return guarded(
            "capture",
            lambda: api.capture(
                bench,
                model,
                text,
                layer,
                head,
                words=words,
                mask_special=mask_special,
                mask_first=mask_first,
                renormalize=renormalize,
                norm=norm,
                encoding=encoding,
            ),
        )

    def stats(text: str, model: str = default) -> dict[str, Any]:
        """Per-head statistics of text (entropy, distance, first/special/previous/diagonal share,
        confidence). Keys: model, tokens, layers, head_numbers, statistics, notes, warning, heads (one
        record per layer and head)."""
        return guarded("stats", lambda: api.stats(bench, model, text))

    def explain(
        text: str,
        model: str = default,
        target: str = "",
        compare: str = "",
        methods: list[str] = NO_METHODS,
    ) -> dict[str, Any]:
        """Word scores of one output by several methods (attention, calibrated, rollout, flow, ig,
        attention_x_gradient, input_x_gradient, occlusion; empty: attention, rollout, the gradient
        methods and occlusion). Decoders explain target (empty: the top next token), encoders the
        cosine to compare. Keys: model, unit, words, target, output, methods, scores, flags,
        agreement_with_occlusion, caveats, warning."""
        return guarded(
            "explain",
            lambda: api.explain(
                bench, model, text, target=target, compare=compare, methods=tuple(methods or ())
            ),
        )

    def rag(question: str, chunks: list[str], answer: str = "", model: str = default) -> dict[str, Any]:
        """Which retrieved chunk the answer uses: attention mass per chunk beside the drop of the
        answer's log-probability when the chunk is removed (answer empty: the model's greedy answer).
        Keys: model, question, answer, answer_source, answer_tokens, answer_logprob, spearman,
        verdict, caveats, warning, chunks (id, text, attention, calibrated_attention, logprob_drop,
        flag, attention_by_answer_token)."""
        return guarded("rag", lambda: api.rag(bench, model, question, chunks, answer))

    for fn in (models, capture, stats, explain, rag):
        gr.api(
            fn,
            api_name=fn.__name__,
            concurrency_limit=concurrency_limit,
            concurrency_id=CONCURRENCY_ID,
        )
