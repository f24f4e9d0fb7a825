"""Hand-built results for tests that need no model."""

from __future__ import annotations

import numpy as np

from headmap.result import AttentionResult, LayerKey, LayerMap, Stack
from headmap.tokens import Tokens


def tokens_from(text: str, spans: list[tuple[int, int]], special: list[bool] | None = None) -> Tokens:
    special = special or [False] * len(spans)
    names = tuple(text[a:b].strip() or "[S]" for a, b in spans)
    return Tokens(text=text, tokens=names, offsets=tuple(spans), special=tuple(special))


def softmax_rows(shape: tuple[int, ...], seed: int = 0, sharp: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape) * sharp
    e = np.exp(x - x.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def make_result(
    tokens: Tokens,
    weights: np.ndarray,
    layer: int = 0,
    num_layers: int = 2,
    rows: tuple[int, ...] | None = None,
    model: str = "hand-made",
) -> AttentionResult:
    """A one-layer result with ``weights`` ``[head, row, key]``."""
    rows = rows if rows is not None else tuple(range(weights.shape[1]))
    layer_map = LayerMap(LayerKey(Stack.SELF, layer), tuple(range(weights.shape[0])), rows, weights)
    return AttentionResult(
        model=model,
        source=tokens,
        layers=(layer_map,),
        num_layers={Stack.SELF: num_layers},
        num_heads=weights.shape[0],
    )
