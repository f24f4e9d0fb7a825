"""The report contract for :class:`~headmap.result.AttentionResult`, which lives below this stage.

``AttentionResult`` cannot inherit :class:`~headmap.render.report.Report` (the core stage never
imports render), so it is registered here as a virtual subclass and ``headmap/__init__`` binds the
functions below into its :class:`~headmap.result.Stages`: ``save`` goes through the one writer
(:func:`headmap.render.report.write`), ``page`` is the interactive view.
"""

from __future__ import annotations

from typing import Any

from headmap.render.interactive import interactive_html
from headmap.render.report import COMMON, Format, Report
from headmap.result import AttentionResult, LayerKey

#: Every format an AttentionResult writes: the common ones, its long table and its raw maps.
ATTENTION_FORMATS = (*COMMON, Format.PARQUET, Format.SAFETENSORS)

Report.register(AttentionResult)


def attention_formats(result: AttentionResult) -> tuple[Format, ...]:
    """``AttentionResult.formats()``: the same for every result."""
    return ATTENTION_FORMATS


def attention_page(
    result: AttentionResult,
    layer: int | str | LayerKey | None = None,
    head: int | None = None,
    **options: Any,
) -> str:
    """``AttentionResult.page()``: the interactive view (the notebook display), starting at ``layer``/``head``."""
    return interactive_html(result, layer, head, **options)


__all__ = ["ATTENTION_FORMATS", "attention_formats", "attention_page"]
