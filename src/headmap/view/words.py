"""Word view: group sub-tokens into words by their character offsets and aggregate the maps.

Words come from the tokenizer's offsets into the text, never from marker characters ('Ġ', '▁',
'##'), so WordPiece, byte-level BPE and SentencePiece tokenizers all work the same way. Following
Clark et al. (2019), attention *to* a word is the sum over its pieces' key columns and attention
*from* a word is the mean over its pieces' query rows, so rows that summed to 1 still do.
"""

from __future__ import annotations

import string
import unicodedata
from dataclasses import replace

import numpy as np

from headmap.errors import HeadmapError
from headmap.result import AttentionResult, LayerMap
from headmap.tokens import Tokens

_LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"


def _is_punctuation(piece: str) -> bool:
    """True for a non-empty string made only of punctuation (ASCII symbols such as '$' count too)."""
    return bool(piece) and all(
        ch in string.punctuation or unicodedata.category(ch).startswith("P") for ch in piece
    )


def word_groups(tokens: Tokens, split_punctuation: bool = False) -> list[list[int]]:
    """Token indices of each word, in order; every token is in exactly one word.

    A token continues the previous word when neither is special, no character lies between them
    (overlapping spans count as touching: byte-fallback pieces of one character share its span),
    and the token's own span does not begin with whitespace. Byte-level BPE keeps the leading space
    inside the token and WordPiece leaves it out; both start a new word at a space. A token with an
    empty span, or one that ends in a line break, ends its word too: a newline is often an
    attention sink and would vanish inside the next word. With ``split_punctuation`` a token that
    is only punctuation (leading space aside) is a word of its own.
    """
    groups: list[list[int]] = []
    previous_end, previous_joinable = 0, False
    for i, ((start, end), special) in enumerate(zip(tokens.offsets, tokens.special)):
        piece = tokens.text[start:end]
        empty = end <= start
        punct = split_punctuation and _is_punctuation(piece.strip())
        joins = (
            previous_joinable
            and not special
            and not empty
            and not punct
            and start <= previous_end
            and not piece[:1].isspace()
        )
        if joins:
            groups[-1].append(i)
            previous_end = max(previous_end, end)
        else:
            groups.append([i])
            previous_end = end
        previous_joinable = not (special or empty or punct) and piece[-1] not in _LINE_BREAKS
    return groups


def word_tokens(tokens: Tokens, groups: list[list[int]]) -> Tokens:
    """The :class:`Tokens` of ``groups`` (from :func:`word_groups`), with ``unit="word"``.

    A word's string is its text span stripped of surrounding whitespace; special tokens and
    whitespace-only words keep the display string of their first token (e.g. ``[CLS]``, ``⏎``).
    """
    names: list[str] = []
    spans: list[tuple[int, int]] = []
    specials: list[bool] = []
    for group in groups:
        first = group[0]
        start = tokens.offsets[first][0]
        end = max(tokens.offsets[i][1] for i in group)
        raw = tokens.text[start:end] if end > start else ""
        stripped = raw.strip()
        if tokens.special[first] or not stripped:
            names.append(tokens.tokens[first])
            spans.append((start, end))
        else:
            lead = len(raw) - len(raw.lstrip())
            names.append(stripped)
            spans.append((start + lead, start + lead + len(stripped)))
        specials.append(tokens.special[first])
    return Tokens(
        text=tokens.text, tokens=tuple(names), offsets=tuple(spans), special=tuple(specials), unit="word"
    )


class _Side:
    """Word structure of one token axis (the source or the target tokens)."""

    def __init__(self, tokens: Tokens, split_punctuation: bool) -> None:
        groups = word_groups(tokens, split_punctuation)
        self.words = word_tokens(tokens, groups)
        # Words are contiguous runs of tokens, so their first tokens are all reduceat needs.
        self.starts = np.array([g[0] for g in groups], dtype=np.int64)
        self.word_of = np.repeat(np.arange(len(groups)), [len(g) for g in groups])


def _segments(sorted_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start positions and lengths of the runs of equal values in a sorted array."""
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    return starts, np.diff(np.r_[starts, len(sorted_ids)])


def _aggregate_layer(layer: LayerMap, keys: _Side, queries: _Side) -> LayerMap:
    """``[head, row, key]`` -> ``[head, word_row, key_word]``: sum over keys, mean over rows."""
    weights = np.asarray(layer.weights, dtype=np.float32)  # no copy when already float32
    row_words = queries.word_of[np.asarray(layer.rows, dtype=np.int64)]
    # Rows may be any subset in any order: visit them sorted by word without copying the array.
    order = np.argsort(row_words, kind="stable")
    starts, lengths = _segments(row_words[order])
    new_rows = row_words[order][starts]
    out = np.empty((weights.shape[0], len(new_rows), len(keys.starts)), dtype=np.float32)
    if len(new_rows) == 0:
        return LayerMap(layer.key, layer.heads, (), out)
    # One head at a time, through one reused buffer: fresh multi-hundred-MB temporaries per head
    # cost more in page faults than the arithmetic (8k tokens: 256 MB per head map).
    first_rows = order[starts]
    acc = np.empty((len(new_rows), weights.shape[2]), dtype=np.float32)  # [word_row, key]
    more = np.empty((int((lengths > 1).sum()), weights.shape[2]), dtype=np.float32)
    for h in range(weights.shape[0]):
        # Rows first: gathering whole rows is a plain memory copy, and it leaves fewer rows for
        # the key reduction. Most words have one or two pieces, so add the j-th captured row of
        # every word that has one; the loop runs over piece positions, never over rows.
        # mode="clip" skips take's buffered copy (the indices are valid by construction).
        head = weights[h]
        np.take(head, first_rows, axis=0, out=acc, mode="clip")
        for j in range(1, int(lengths.max())):
            longer = np.flatnonzero(lengths > j)
            piece = more[: len(longer)]
            np.take(head, order[starts[longer] + j], axis=0, out=piece, mode="clip")
            acc[longer] += piece
        # reduceat along the contiguous last axis is numpy's fastest segment sum.
        np.add.reduceat(acc, keys.starts, axis=-1, out=out[h])
    out /= lengths[None, :, None].astype(np.float32)
    return LayerMap(layer.key, layer.heads, tuple(int(w) for w in new_rows), out)


def aggregate_words(result: AttentionResult, split_punctuation: bool = False) -> AttentionResult:
    """The word view of ``result``: maps ``[head, query_word, key_word]``; the input is unchanged.

    Attention to a word is the sum over its pieces' key columns, attention from a word the mean
    over its pieces' *captured* query rows; a word none of whose rows were captured has no row.
    New ``rows`` are word indices in increasing order. Source and target tokens both become
    words (``unit="word"``).
    """
    if result.source.unit == "word" or (result.target is not None and result.target.unit == "word"):
        raise HeadmapError("this result is already aggregated into words: aggregate a token-level result")
    if result.normalization.is_log:
        # Sums and means of log10 weights are not log10 weights of anything.
        raise HeadmapError(
            "cannot aggregate log10 weights into words: call to_words() first, then normalize('log')"
        )
    source = _Side(result.source, split_punctuation)
    target = _Side(result.target, split_punctuation) if result.target is not None else None

    def side(tokens: Tokens) -> _Side:
        if tokens is result.source:
            return source
        assert target is not None
        return target

    layers = [
        _aggregate_layer(layer, side(result.key_tokens(layer.key)), side(result.query_tokens(layer.key)))
        for layer in result.layers
    ]
    return replace(
        result,
        source=source.words,
        target=target.words if target is not None else None,
        layers=tuple(layers),
    )
