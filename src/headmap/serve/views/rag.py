"""The RAG view: attention on each retrieved chunk per answer token, beside each chunk's removal."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from headmap.apps.rag import RagReport, rag
from headmap.errors import HeadmapError
from headmap.serve.payload import Axes, table_payload
from headmap.serve.views.base import Control, Request, View
from headmap.serve.views.common import picture_key

if TYPE_CHECKING:
    from headmap.serve.workbench import Workbench

EXAMPLE_QUESTION = "What is the access code for the vault?"
EXAMPLE_CHUNKS = (
    "The lobby door opens with the code 1150 during office hours.\n\n"
    "The vault's access code is 7428; it changes every Monday.\n\n"
    "Visitors park in the garage on level 2 and sign in at the desk."
)
#: Generated answers stop here in the dashboard (``headmap rag`` defaults to 48).
MAX_NEW_TOKENS = 32


def controls() -> tuple[Any, ...]:
    import gradio as gr

    return (
        gr.Textbox(label="question", value=EXAMPLE_QUESTION, elem_id="hm-question"),
        gr.Textbox(
            label="retrieved chunks, separated by blank lines",
            value=EXAMPLE_CHUNKS,
            lines=6,
            elem_id="hm-chunks",
        ),
        gr.Textbox(label="answer to check (empty: the model's own greedy answer)", elem_id="hm-answer"),
    )


def split_chunks(text: str) -> list[str]:
    """Chunks of the text box: paragraphs separated by blank lines, as ``headmap rag`` reads ``.txt``."""
    return [part.strip() for part in re.split(r"\n\s*\n", text or "") if part.strip()]


def checked_report(
    bench: Workbench, model: str, question: str, chunks: Sequence[str], answer: str | None
) -> RagReport:
    """``rag`` of the inputs (each checked against the server's text limit), computed once and kept."""
    question = bench.check_text(question, "question").strip()
    chunks = [bench.check_text(chunk, "chunk").strip() for chunk in chunks]
    chunks = [chunk for chunk in chunks if chunk]
    answer = bench.check_text(answer, "answer") if answer else None
    if not question:
        raise HeadmapError("the question is empty: type the question the chunks were retrieved for")
    if not chunks:
        raise HeadmapError("no chunks: paste the retrieved chunks, separated by blank lines")
    if sum(len(chunk) for chunk in chunks) > bench.max_text_chars:
        raise HeadmapError(
            f"the chunks have more than {bench.max_text_chars} characters together: send fewer or shorter "
            "chunks (the server's limit is --max-text-chars)"
        )
    loaded = bench.model(model)
    key = ("rag", model, question, tuple(chunks), answer)
    return bench.derive(
        key,
        lambda: rag(
            loaded,
            question,
            chunks,
            answer=answer,
            max_new_tokens=MAX_NEW_TOKENS,
            calibration=bench.calibration(model),
        ),
    )


def draw(bench: Workbench, request: Request, values: Sequence[Any]) -> dict[str, object]:

    question = str(values[0]).strip() if values and values[0] else ""
    chunks = split_chunks(str(values[1])) if len(values) > 1 else []
    answer = str(values[2]) if len(values) > 2 and values[2] else None
    report = checked_report(bench, request.model, question, chunks, answer)
    table = report.token_attention  # [answer token, chunk]
    lines = [
        f"answer: {report.answer!r} (log p = {report.answer_logprob:.3f}, "
        f"{'generated greedily' if report.generated else 'given'}); rows: answer tokens, each read from the "
        "position that predicts it; columns: chunks; attention mean over every layer and head"
    ]
    for cid, att, cal, drop, flag in zip(
        report.ids, report.attention, report.calibrated_attention, report.logprob_drop, report.flags
    ):
        lines.append(
            f"chunk {cid}: attention {att:.4f}, calibrated {cal:+.4f} ({flag}); removing it changes the "
            f"answer's log p by {-drop:+.3f}"
        )
    if report.learned_attention is not None:
        row = report.costs.set_index("method").loc["learned head weights (AT2)"]
        lines.append(
            "learned head weights (AT2, headmap calibrate): "
            + ", ".join(f"{cid} {v:.4f}" for cid, v in zip(report.ids, report.learned_attention, strict=True))
            + f"; Spearman with removal {row.spearman:+.2f}, same top chunk: {'yes' if row.same_top else 'no'}"
        )
    lines.append(report.verdict)
    return table_payload(
        picture_key(request, "rag", question, len(chunks), answer),
        f"{report.model} · RAG: attention on each chunk",
        table,
        list(report.answer_tokens),
        [f"chunk {i}" for i in report.ids],
        Axes("answer token", "chunk", "attention mass"),
        lines,
        request.cmap,
    )


VIEW = View(
    label="RAG",
    uses=frozenset({Control.CMAP}),
    draw=draw,
    controls=controls,
    help="Which retrieved chunk does the answer use? Attention mass per chunk and answer token, beside the causal "
    "check: the change of the answer's log-probability when each chunk is removed (decoders only).",
)
