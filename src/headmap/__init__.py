"""headmap: open up the attention heads of Transformer models."""

from headmap.errors import HeadmapError
from headmap.result import CAUSATION_WARNING, AttentionResult, LayerKey, LayerMap, Stack
from headmap.tokens import Tokens

__all__ = [
    "CAUSATION_WARNING",
    "AttentionResult",
    "HeadmapError",
    "LayerKey",
    "LayerMap",
    "Stack",
    "Tokens",
]
