"""What an image's attention pictures show: one query unit's row, laid on the patch grid.

A head's row for the CLS token (or any chosen unit) splits into the prefix tokens' weights (CLS,
registers: often sinks) and the patches', which go back onto the image's grid. Attention rollout
(Abnar & Zuidema 2020, who first applied it to ViT) multiplies the head-averaged layers with the
residual added, ``0.5 A + 0.5 I`` rows renormalized, from the first layer up.
"""

from __future__ import annotations

import numpy as np

from headmap.errors import HeadmapError, check_index
from headmap.result import AttentionResult, LayerKey, Stack
from headmap.tokens import Patches, Tokens

__all__ = ["patches_of", "query_index", "query_row", "rollout_matrix", "rollout_row"]


def patches_of(result: AttentionResult) -> Patches:
    """The patch layout of an image result (one clear error for a text result)."""
    if result.source.patches is None:
        raise HeadmapError(
            "this result is over text, not an image: image pictures need a capture of an image"
        )
    return result.source.patches


def query_index(tokens: Tokens, query: int | str) -> int:
    """The unit a picture looks from: an index (negative allowed) or a label such as ``"CLS"`` or ``"p(1,2)"``."""
    if isinstance(query, str):
        if query not in tokens.tokens:
            raise HeadmapError(f"no unit {query!r}: the units are {', '.join(tokens.tokens[:6])}, ...")
        return tokens.tokens.index(query)
    return check_index(query, len(tokens), "query unit")


def query_row(result: AttentionResult, key: LayerKey, head: int | None, query: int | str = 0) -> np.ndarray:
    """Unit ``query``'s weights over every key unit, in head ``head`` (None: the mean of the captured heads)."""
    layer = result.layer(key)
    index = query_index(result.source, query)
    if index not in layer.rows:
        raise HeadmapError(
            f"query unit {index} was not captured in {key.name}: capture it with rows=[{index}]"
        )
    row = layer.rows.index(index)
    weights = layer.weights[:, row] if head is None else layer.head(head)[row][None]
    out: np.ndarray = weights.astype(np.float64).mean(0)
    return out


def rollout_matrix(result: AttentionResult) -> np.ndarray:
    """The attention rollout ``[query, key]`` over every layer of the model (all rows captured):
    head-averaged layers with the residual added, ``0.5 A + 0.5 I`` rows renormalized, multiplied
    from the first layer up."""
    depth = result.num_layers.get(Stack.SELF, 0)
    have = {layer.key.index for layer in result.layers if layer.key.stack is Stack.SELF}
    n = len(result.source)
    if have != set(range(depth)) or any(len(layer.rows) != n for layer in result.layers):
        raise HeadmapError(
            "rollout needs every layer with every query row: capture with layers=None, rows=None"
        )
    joint = np.eye(n)
    for index in range(depth):
        mean = result.layer(LayerKey(Stack.SELF, index)).weights.astype(np.float64).mean(0)
        aug = 0.5 * mean + 0.5 * np.eye(n)
        joint = (aug / aug.sum(-1, keepdims=True)) @ joint
    return joint


def rollout_row(result: AttentionResult, query: int | str = 0) -> np.ndarray:
    """Unit ``query``'s row of the attention rollout over every layer of the model (all rows captured)."""
    row: np.ndarray = rollout_matrix(result)[query_index(result.source, query)]
    return row
