"""Contract cases: capture and analysis results (AttentionResult, HeadStats, HeadReport, HeadImportance,
Alignment).

Each factory runs a tiny random model (``tiny_models.build``) on two short texts: real results in
well under two seconds; Alignment is made from planted cross-attention of a 1 s clip
(``test_align.planted``). HeadStats, HeadReport, HeadImportance and Alignment have no reader, so no
loader.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from contract_case import Case
from test_align import planted
from tiny_models import build

from headmap import align, capture, collect_stats, head_importance, head_report, load_result
from headmap.models import LoadedModel, load
from headmap.render.report import Format

TEXTS = ["The trophy didn't fit in the suitcase.", "A cat sat <b>on</b> the mat & slept."]


@cache
def _tiny(arch: str) -> LoadedModel:
    return build(arch, load("minilm").tokenizer)[0]


def _attention(_: Path):
    return capture(_tiny("gpt2"), TEXTS[1], layers=[0, 1])


def _stats(_: Path):
    return collect_stats(_tiny("gpt2"), TEXTS[0], layers=[0, 1])


def _report(_: Path):
    return head_report(_tiny("gpt2"), TEXTS, batch_size=2)


def _importance(_: Path):
    return head_importance(_tiny("gpt2"), TEXTS, batch_size=2)


def _alignment(_: Path):
    return align(planted(), top=2)


CORE_CASES: list[Case] = [
    Case("AttentionResult", _attention, load_result, (Format.SAFETENSORS,)),
    Case("HeadStats", _stats),
    Case("HeadReport", _report),
    Case("HeadImportance", _importance),
    Case("Alignment", _alignment),
]
