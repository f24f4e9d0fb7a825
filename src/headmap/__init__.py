"""headmap: open up the attention heads of Transformer models.

>>> import headmap
>>> model = headmap.load("minilm")
>>> result = headmap.capture(model, "The trophy didn't fit in the suitcase.", layers=[3])
>>> result.to_words().render("trophy.png", layer=3, head=5)

Attention is correlation, not causation: a map shows where a head looks, not why the model decides.
"""

from headmap.capture import CapturePlan, MapStore, capture, stream
from headmap.errors import HeadmapError
from headmap.models import LoadedModel, load
from headmap.recompute import Block
from headmap.result import CAUSATION_WARNING, AttentionResult, LayerKey, LayerMap, Stack
from headmap.stats import HeadStats, StatsCollector, collect_stats
from headmap.storage import load_result
from headmap.tokens import Tokens

__version__ = "0.1.0"

__all__ = [
    "CAUSATION_WARNING",
    "AttentionResult",
    "Block",
    "CapturePlan",
    "HeadStats",
    "HeadmapError",
    "LayerKey",
    "LayerMap",
    "LoadedModel",
    "MapStore",
    "Stack",
    "StatsCollector",
    "Tokens",
    "capture",
    "collect_stats",
    "load",
    "load_result",
    "stream",
]
