"""headmap: open up the attention heads of Transformer models.

>>> import headmap
>>> model = headmap.load("minilm")
>>> result = headmap.capture(model, "The trophy didn't fit in the suitcase.", layers=[3])
>>> result.to_words().render("trophy.png", layer=3, head=5)

The package is laid out by stage, each importing only the stages below it: the core types
(``result``, ``tokens``, ``errors``, ``storage``), then ``models``, ``capture``, ``view``,
``render``, ``analysis``, ``attribution``, ``apps``, ``serve`` and ``cli``. This module is the
public API on top of them all. Its names that need torch or matplotlib are imported on first use
(PEP 562), so ``import headmap`` and ``headmap --help`` take a fraction of a second.

Attention is correlation, not causation: a map shows where a head looks, not why the model decides.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable
from importlib import metadata
from typing import TYPE_CHECKING, Any

from headmap import result as _result
from headmap.errors import HeadmapError
from headmap.normalization import Normalization
from headmap.result import CAUSATION_WARNING, AttentionResult, LayerKey, LayerMap, Stack
from headmap.storage import load_result, save_result
from headmap.tokens import Tokens

if TYPE_CHECKING:  # the lazy names below, for type checkers and editors (a test keeps both lists equal)
    from headmap.analysis import (
        HeadImportance,
        HeadReport,
        HeadStats,
        StatsCollector,
        ablate,
        collect_stats,
        head_importance,
        head_report,
        record_heads,
    )
    from headmap.analysis.align_result import Alignment, align
    from headmap.analysis.engines import LocalEngine
    from headmap.analysis.monitor import HeadMonitor
    from headmap.analysis.monitor_plot import plot_monitor
    from headmap.analysis.patch_stats import PatchStats, patch_stats
    from headmap.analysis.ray_engine import RayEngine
    from headmap.apps.audit import AuditRecord, audit, verify
    from headmap.apps.bias import BiasReport, bias_probe
    from headmap.apps.prune import PruneReport, prune, prune_heads
    from headmap.apps.rag import RagReport, calibrate_rag, rag
    from headmap.attribution import (
        Calibration,
        Explanation,
        FaithfulnessReport,
        GenerationReport,
        calibrate,
        explain,
        explain_generation,
        faithfulness,
        load_calibration,
    )
    from headmap.capture import Audio, Block, CapturePlan, Encoded, MapStore, capture, encode_parts, stream
    from headmap.capture.vlm import vlm_input
    from headmap.models import LoadedModel, load
    from headmap.render.files import render_to_file  # noqa: F401 - the stages bound below
    from headmap.render.interactive import interactive_html, notebook_view  # noqa: F401 - the stages bound below
    from headmap.render.static import plot_grid, plot_head  # noqa: F401 - the stages bound below
    from headmap.view import aggregate_words, mask_tokens, normalize_result  # noqa: F401 - the stages bound below

#: Each public name that needs torch, matplotlib or an optional extra, and the module it lives in.
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        (
            "HeadImportance",
            "HeadReport",
            "HeadStats",
            "StatsCollector",
            "ablate",
            "collect_stats",
            "head_importance",
            "head_report",
            "record_heads",
        ),
        "headmap.analysis",
    ),
    "LocalEngine": "headmap.analysis.engines",
    **dict.fromkeys(("Alignment", "align"), "headmap.analysis.align_result"),
    **dict.fromkeys(("PatchStats", "patch_stats"), "headmap.analysis.patch_stats"),
    # HeadMonitor subclasses transformers.TrainerCallback (~0.6 s more); Ray is an optional extra.
    "HeadMonitor": "headmap.analysis.monitor",
    "plot_monitor": "headmap.analysis.monitor_plot",
    "RayEngine": "headmap.analysis.ray_engine",
    **dict.fromkeys(("AuditRecord", "audit", "verify"), "headmap.apps.audit"),
    **dict.fromkeys(("BiasReport", "bias_probe"), "headmap.apps.bias"),
    **dict.fromkeys(("PruneReport", "prune", "prune_heads"), "headmap.apps.prune"),
    **dict.fromkeys(("RagReport", "calibrate_rag", "rag"), "headmap.apps.rag"),
    **dict.fromkeys(
        (
            "Calibration",
            "Explanation",
            "FaithfulnessReport",
            "GenerationReport",
            "calibrate",
            "explain",
            "explain_generation",
            "faithfulness",
            "load_calibration",
        ),
        "headmap.attribution",
    ),
    **dict.fromkeys(
        ("Audio", "Block", "CapturePlan", "Encoded", "MapStore", "capture", "encode_parts", "stream"),
        "headmap.capture",
    ),
    **dict.fromkeys(("LoadedModel", "load"), "headmap.models"),
    "vlm_input": "headmap.capture.vlm",
    "render_to_file": "headmap.render.files",
    **dict.fromkeys(("interactive_html", "notebook_view"), "headmap.render.interactive"),
    **dict.fromkeys(("plot_grid", "plot_head"), "headmap.render.static"),
    **dict.fromkeys(("aggregate_words", "mask_tokens", "normalize_result"), "headmap.view"),
}


def __getattr__(name: str) -> Any:
    """A lazy public name, imported on first use and kept (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'headmap' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


class _Api(types.ModuleType):
    """This module: keeps ``headmap.capture`` the function when the subpackage of that name loads."""

    def __setattr__(self, name: str, value: object) -> None:
        # Importing the subpackage headmap.capture sets the attribute `capture` to the package; the
        # public name is the function, so the import's assignment is dropped and __getattr__ serves it.
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


def _later(name: str, module: str | None = None) -> Callable[..., Any]:
    """A stand-in for the lazy function ``name`` (of ``module``, else of :data:`_LAZY`) that imports
    it on the first call."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module or _LAZY[name]), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


_result.bind_stages(
    _result.Stages(
        to_words=_later("aggregate_words"),
        mask=_later("mask_tokens"),
        normalize=_later("normalize_result"),
        plot_head=_later("figure_head", "headmap.render.frames"),
        plot_grid=_later("figure_grid", "headmap.render.frames"),
        render=_later("render_to_file"),
        page=_later("attention_page", "headmap.render.attention"),
        write=_later("write", "headmap.render.report"),
        formats=_later("attention_formats", "headmap.render.attention"),
        save_raw=save_result,
        show=_later("show", "headmap.render.report"),
        to_dict=_later("attention_dict", "headmap.render.attention"),
        to_pandas=_later("attention_table", "headmap.render.attention"),
    )
)
sys.modules[__name__].__class__ = _Api

try:
    __version__ = metadata.version("headmap")
except metadata.PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

__all__ = [
    "CAUSATION_WARNING",
    "Alignment",
    "AttentionResult",
    "Audio",
    "AuditRecord",
    "BiasReport",
    "Block",
    "Calibration",
    "CapturePlan",
    "Encoded",
    "Explanation",
    "GenerationReport",
    "FaithfulnessReport",
    "HeadImportance",
    "HeadMonitor",
    "HeadReport",
    "HeadStats",
    "HeadmapError",
    "LayerKey",
    "LayerMap",
    "LoadedModel",
    "LocalEngine",
    "MapStore",
    "Normalization",
    "PatchStats",
    "PruneReport",
    "RagReport",
    "RayEngine",
    "Stack",
    "StatsCollector",
    "Tokens",
    "ablate",
    "align",
    "audit",
    "bias_probe",
    "calibrate",
    "calibrate_rag",
    "capture",
    "collect_stats",
    "encode_parts",
    "explain",
    "explain_generation",
    "faithfulness",
    "head_importance",
    "head_report",
    "interactive_html",
    "load",
    "load_calibration",
    "load_result",
    "patch_stats",
    "plot_monitor",
    "prune",
    "prune_heads",
    "rag",
    "record_heads",
    "stream",
    "verify",
    "vlm_input",
]
