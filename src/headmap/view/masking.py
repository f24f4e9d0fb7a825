"""Hide special and sink tokens from the maps, optionally renormalizing what is left.

Special tokens and the first token (the usual attention sink) often take most of a row's weight,
which flattens the colour scale of everything else. Masking removes them from both axes. The kept
weights are left as they are by default, so rows then sum to less than 1: that is honest about the
hidden mass. ``renormalize`` divides each row by what it kept instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from headmap.errors import HeadmapError
from headmap.result import AttentionResult, LayerMap
from headmap.tokens import Tokens


def _dropped(tokens: Tokens, special: bool, first: bool, indices: Sequence[int]) -> np.ndarray:
    """Boolean ``[token]``: True for the tokens to remove."""
    drop = np.zeros(len(tokens), dtype=bool)
    if special:
        drop |= np.asarray(tokens.special, dtype=bool)
    if first and len(tokens):
        drop[0] = True
    drop[list(indices)] = True
    return drop


def _check_indices(indices: Sequence[int], size: int, unit: str) -> list[int]:
    """``indices`` as non-negative positions (negative ones count from the end, as in Python)."""
    bad = [i for i in indices if not -size <= int(i) < size]
    if bad:
        raise HeadmapError(
            f"{unit} indices {bad} are out of range: the text has {size} {unit}s "
            f"(valid: 0..{size - 1} or -{size}..-1)"
        )
    return sorted({int(i) % size for i in indices})


def _describe(
    tokens: Tokens, drop: np.ndarray, special: bool, first: bool, chosen: list[int], side: str
) -> str:
    """``"2 special tokens, the first token"``-style text for the note."""
    unit = tokens.unit
    parts = []
    if special:
        count = int(np.count_nonzero(tokens.special))
        parts.append(f"{count} special {unit}{'s' if count != 1 else ''}")
    if first:
        parts.append(f"the first {unit}")
    if chosen:
        parts.append(f"{unit}s {chosen}")
    total = int(drop.sum())
    what = ", ".join(parts) if parts else "nothing chosen"
    return f"{total} {side}{unit}{'s' if total != 1 else ''} ({what})"


def _mask_layer(layer: LayerMap, query_keep: np.ndarray, key_keep: np.ndarray, renormalize: bool) -> LayerMap:
    """Drop removed query rows and key columns of ``[head, row, key]``; renumber ``rows``."""
    # new_position[token] is the token's index after masking, -1 for removed ones.
    new_position = np.full(len(query_keep), -1, dtype=np.int64)
    new_position[query_keep] = np.arange(int(query_keep.sum()))
    positions = new_position[np.asarray(layer.rows, dtype=np.int64)]
    row_pick = np.flatnonzero(positions >= 0)
    key_pick = np.flatnonzero(key_keep)
    source = layer.weights
    weights = np.empty((source.shape[0], len(row_pick), len(key_pick)), dtype=np.float32)
    # Head by head through one reused buffer, with plain takes: an advanced index over both axes
    # would build [row, key] index arrays, and fresh full-size temporaries cost page faults.
    kept_rows = np.empty((len(row_pick), source.shape[2]), dtype=source.dtype)
    for h in range(source.shape[0]):
        np.take(source[h], row_pick, axis=0, out=kept_rows, mode="clip")
        np.take(kept_rows, key_pick, axis=1, out=weights[h], mode="clip")
    if renormalize:
        totals = weights.sum(-1, keepdims=True)
        # In place: weights are >= 0, so a row that kept nothing is all 0 and stays so (no NaN).
        np.divide(weights, totals, out=weights, where=totals > 0)
    rows = tuple(int(p) for p in positions[row_pick])
    return LayerMap(layer.key, layer.heads, rows, weights)


def mask_tokens(
    result: AttentionResult,
    special: bool = True,
    first: bool = False,
    indices: Sequence[int] = (),
    renormalize: bool = False,
) -> AttentionResult:
    """Remove tokens from both axes of every layer; the input is unchanged.

    ``special`` drops the tokenizer's special tokens ([CLS], [SEP], BOS, ...) and ``first`` the
    first token (the usual attention sink), on the source and, for encoder-decoder models, the
    target side. ``indices`` are positions in the source tokens (negative ones count from the end).
    Rows of removed query tokens are dropped and ``LayerMap.rows`` renumbered into the kept tokens.
    Without ``renormalize`` the kept weights are unchanged (rows sum to less than 1); with it each
    row is divided by its kept sum (rows that kept nothing stay 0). A note records what was done.
    """
    chosen = _check_indices(indices, len(result.source), result.source.unit)
    if renormalize and result.normalization.is_log:
        raise HeadmapError(
            "cannot renormalize log10 weights: mask the raw result first, then normalize('log')"
        )
    source_drop = _dropped(result.source, special, first, chosen)
    target_drop = _dropped(result.target, special, first, ()) if result.target is not None else None
    for side, drop in (("source", source_drop), ("target", target_drop)):
        if drop is not None and drop.all():
            raise HeadmapError(
                f"masking would remove every {side} token ({len(drop)} of {len(drop)}): mask fewer tokens"
            )

    def keep_of(tokens: Tokens) -> np.ndarray:
        drop = source_drop if tokens is result.source else target_drop
        assert drop is not None
        return ~drop

    layers = [
        _mask_layer(
            layer,
            keep_of(result.query_tokens(layer.key)),
            keep_of(result.key_tokens(layer.key)),
            renormalize,
        )
        for layer in result.layers
    ]

    note = "masked " + _describe(result.source, source_drop, special, first, chosen, "")
    target = None
    if result.target is not None and target_drop is not None:
        note += " and " + _describe(result.target, target_drop, special, first, [], "target ")
        target = result.target.select(np.flatnonzero(~target_drop).tolist())
    note += "; rows renormalized" if renormalize else "; rows not renormalized (they sum to less than 1)"
    return replace(
        result,
        source=result.source.select(np.flatnonzero(~source_drop).tolist()),
        target=target,
        layers=tuple(layers),
        notes=(*result.notes, note),
    )
