"""Contract cases: attribution and applications (Explanation, GenerationReport, RagReport, BiasReport,
PruneReport, AuditRecord).

Each factory runs the real pipeline on a tiny random-weight llama (two layers, four heads, the
MiniLM tokenizer), a few seconds at most; the model is built once for all four.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from contract_case import Case
from tiny_models import build

import headmap
from headmap.apps.audit import AuditRecord, audit
from headmap.apps.bias import bias_probe
from headmap.apps.prune import prune, read_report
from headmap.apps.rag import rag
from headmap.attribution.explanation import Explanation
from headmap.models import LoadedModel
from headmap.render.report import Format

TEXT = "The trophy didn't fit in the suitcase because it was too big."
TEXTS = [TEXT, "She planted tomatoes along the fence.", "Rain again."]
HELD = ["The carpenter measured the door frame twice.", "Fresh bread sells out early on Saturdays."]


@cache
def tiny_llama() -> LoadedModel:
    """The tiny llama the four cases share (its tokenizer is the bundled MiniLM's)."""
    return build("llama", headmap.load("minilm").tokenizer)[0]


def make_explanation(_: Path) -> Explanation:
    return headmap.explain(
        tiny_llama(), TEXT, 2000, methods=["attention", "ig", "occlusion"], n_steps=4, max_steps=4
    )


def make_generation(_: Path) -> object:
    return headmap.explain_generation(tiny_llama(), TEXT, max_new_tokens=3)


def make_faithfulness(_: Path) -> object:
    return headmap.faithfulness(tiny_llama(), [TEXT, TEXTS[1]], ["attention", "occlusion"], n_boot=50)


def make_rag(_: Path) -> object:
    chunks = ["the old maps are kept in the library.", "the garage has space for two cars."]
    return rag(tiny_llama(), "which room holds the old maps?", chunks, answer="the library")


def make_bias(_: Path) -> object:
    return bias_probe(
        tiny_llama(),
        "the applicant {name} has ten years of experience . hire {name} ? answer :",
        {"A": ["mary", "susan"], "B": ["james", "robert"]},
        "ten years of experience",
        target="yes",
        k=1,
        controls=1,
        resamples=50,
    )


def make_prune(_: Path) -> object:
    return prune(tiny_llama(), TEXTS, heldout=HELD, curve=True, step=0.5, seeds=[0], latency_repeats=0)


def make_audit(_: Path) -> AuditRecord:
    return audit(tiny_llama(), TEXT, methods=["attention", "occlusion"], corpus=TEXTS)


APP_CASES: list[Case] = [
    Case("Explanation", make_explanation, Explanation.load, (Format.JSON,)),
    Case("GenerationReport", make_generation),
    Case("FaithfulnessReport", make_faithfulness),
    Case("RagReport", make_rag),
    Case("BiasReport", make_bias),
    Case("PruneReport", make_prune, read_report, (Format.JSON,)),
    Case("AuditRecord", make_audit, AuditRecord.load, (Format.JSON,)),
]
