"""Hide special and sink tokens from a map, optionally renormalizing what is left."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from headmap.errors import HeadmapError
from headmap.result import AttentionResult, LayerMap
from headmap.tokens import Tokens


def _kept(tokens: Tokens, special: bool, first: bool, indices: set[int]) -> np.ndarray:
    drop = np.zeros(len(tokens), dtype=bool)
    if special:
        drop |= np.array(tokens.special, dtype=bool)
    if first and len(tokens):
        drop[0] = True
    for i in indices:
        drop[i] = True
    return np.flatnonzero(~drop)


def mask_tokens(
    result: AttentionResult,
    special: bool = True,
    first: bool = False,
    indices: Sequence[int] = (),
    renormalize: bool = False,
) -> AttentionResult:
    """Remove tokens from both axes of every layer.

    ``special`` drops the tokenizer's special tokens ([CLS], [SEP], BOS, ...), ``first`` the first
    token (the usual attention sink), ``indices`` given positions of the source tokens. Kept weights
    are unchanged, so rows then sum to less than 1, which is honest about the hidden mass; with
    ``renormalize`` each row is divided by its kept sum (rows with nothing kept stay 0).
    """
    n_source = len(result.source)
    bad = [i for i in indices if not -n_source <= i < n_source]
    if bad:
        raise HeadmapError(f"token indices {bad} are out of range: the text has {n_source} tokens")
    source_indices = {i % n_source for i in indices}
    keep: dict[int, np.ndarray] = {id(result.source): _kept(result.source, special, first, source_indices)}
    if result.target is not None:
        keep[id(result.target)] = _kept(result.target, special, first, set())
    for tokens in filter(None, (result.source, result.target)):
        if len(keep[id(tokens)]) == 0:
            raise HeadmapError("masking would remove every token: mask fewer tokens")

    layers = []
    for layer in result.layers:
        key_keep = keep[id(result.key_tokens(layer.key))]
        query_keep = keep[id(result.query_tokens(layer.key))]
        new_index = {int(old): new for new, old in enumerate(query_keep)}
        row_pick = [r for r, tok in enumerate(layer.rows) if tok in new_index]
        weights = layer.weights[:, row_pick][:, :, key_keep]
        if renormalize:
            totals = weights.sum(-1, keepdims=True)
            weights = np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0)
        rows = tuple(new_index[layer.rows[r]] for r in row_pick)
        layers.append(LayerMap(layer.key, layer.heads, rows, np.ascontiguousarray(weights, dtype=np.float32)))

    dropped = n_source - len(keep[id(result.source)])
    note = f"masked {dropped} token{'s' if dropped != 1 else ''}" + (
        " (" + ", ".join(n for n, on in (("special", special), ("first", first), ("chosen", bool(indices))) if on) + ")"
    )
    note += "; rows renormalized" if renormalize else "; rows not renormalized (they sum to < 1)"
    target = result.target.select(keep[id(result.target)].tolist()) if result.target is not None else None
    return replace(
        result,
        source=result.source.select(keep[id(result.source)].tolist()),
        target=target,
        layers=tuple(layers),
        notes=(*result.notes, note),
    )
