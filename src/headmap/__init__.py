"""headmap: open up the attention heads of Transformer models.

>>> import headmap
>>> model = headmap.load("minilm")
>>> result = headmap.capture(model, "The trophy didn't fit in the suitcase.", layers=[3])
>>> result.to_words().render("trophy.png", layer=3, head=5)

The package is laid out by stage, each importing only the stages below it: the core types
(``result``, ``tokens``, ``errors``, ``storage``), then ``models``, ``capture``, ``view``,
``render``, ``analysis``, ``attribution``, ``apps``, ``serve`` and ``cli``. This module is the
public API on top of them all.

Attention is correlation, not causation: a map shows where a head looks, not why the model decides.
"""

from headmap import result as _result
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
from headmap.analysis.engines import LocalEngine
from headmap.analysis.monitor_plot import plot_monitor
from headmap.apps.bias import BiasReport, bias_probe
from headmap.apps.prune import PruneReport, prune, prune_heads
from headmap.apps.rag import RagReport, rag
from headmap.attribution import Explanation, explain
from headmap.capture import Block, CapturePlan, Encoded, MapStore, capture, encode_parts, stream
from headmap.errors import HeadmapError
from headmap.models import LoadedModel, load
from headmap.normalization import Normalization
from headmap.render.files import render_to_file
from headmap.render.interactive import interactive_html, notebook_view
from headmap.render.static import plot_grid, plot_head
from headmap.result import CAUSATION_WARNING, AttentionResult, LayerKey, LayerMap, Stack
from headmap.storage import load_result
from headmap.tokens import Tokens
from headmap.view import aggregate_words, mask_tokens, normalize_result

_result.bind_stages(
    _result.Stages(
        to_words=aggregate_words,
        mask=mask_tokens,
        normalize=normalize_result,
        plot_head=plot_head,
        plot_grid=plot_grid,
        render=render_to_file,
        notebook_html=notebook_view,
    )
)

__version__ = "0.1.0"

__all__ = [
    "CAUSATION_WARNING",
    "AttentionResult",
    "BiasReport",
    "Block",
    "CapturePlan",
    "Encoded",
    "Explanation",
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
    "PruneReport",
    "RagReport",
    "RayEngine",
    "Stack",
    "StatsCollector",
    "Tokens",
    "ablate",
    "bias_probe",
    "capture",
    "collect_stats",
    "encode_parts",
    "explain",
    "head_importance",
    "head_report",
    "interactive_html",
    "load",
    "load_result",
    "plot_monitor",
    "prune",
    "prune_heads",
    "rag",
    "record_heads",
    "stream",
]


def __getattr__(name: str) -> object:
    # HeadMonitor subclasses transformers.TrainerCallback, whose import costs ~0.6 s: made on first use.
    if name == "HeadMonitor":
        from headmap.analysis import monitor

        return monitor.HeadMonitor
    if name == "RayEngine":  # Ray is an optional extra, imported only when its engine runs
        from headmap.analysis.ray_engine import RayEngine

        return RayEngine
    raise AttributeError(f"module 'headmap' has no attribute {name!r}")
