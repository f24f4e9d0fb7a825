"""Word view: group sub-tokens into words by their character offsets and aggregate the maps.

Words come from the tokenizer's offsets into the text, never from marker characters ('Ġ', '▁',
'##'), so WordPiece, byte-level BPE and SentencePiece tokenizers all work the same way. Following
Clark et al. (2019), attention *to* a word is the sum over its pieces' keys and attention *from* a
word is the mean over its pieces' query rows, so rows keep summing to 1.
"""

from __future__ import annotations

import string
from dataclasses import replace

import numpy as np

from headmap.errors import HeadmapError
from headmap.result import AttentionResult, LayerMap
from headmap.tokens import Tokens

_PUNCTUATION = set(string.punctuation) | set("“”‘’…–—«»¿¡")


def _is_punctuation(piece: str) -> bool:
    return bool(piece) and all(ch in _PUNCTUATION for ch in piece)


def word_groups(tokens: Tokens, split_punctuation: bool = False) -> list[list[int]]:
    """Token indices of each word, in order. Special tokens are words of their own.

    A token continues the previous word when neither is special, no character lies between them,
    and the token's own span does not begin with whitespace (byte-level BPE keeps the leading
    space inside the token, WordPiece leaves it out: both start a new word at a space).
    """
    groups: list[list[int]] = []
    previous_end, previous_joinable = -1, False
    for i, ((start, end), special) in enumerate(zip(tokens.offsets, tokens.special)):
        piece = tokens.text[start:end]
        punct = split_punctuation and _is_punctuation(piece.strip())
        joins = (
            previous_joinable
            and not special
            and start == previous_end
            and not piece[:1].isspace()
            and not punct
        )
        if joins:
            groups[-1].append(i)
        else:
            groups.append([i])
        previous_end = end
        previous_joinable = not special and not punct and end > start
    return groups


def _word_tokens(tokens: Tokens, groups: list[list[int]]) -> Tokens:
    names, spans, specials = [], [], []
    for group in groups:
        first, last = group[0], group[-1]
        if tokens.special[first]:
            names.append(tokens.tokens[first])
            spans.append(tokens.offsets[first])
            specials.append(True)
            continue
        start, end = tokens.offsets[first][0], tokens.offsets[last][1]
        raw = tokens.text[start:end]
        stripped = raw.strip()
        lead = len(raw) - len(raw.lstrip())
        names.append(stripped or tokens.tokens[first])
        spans.append((start + lead, start + lead + len(stripped)) if stripped else (start, end))
        specials.append(False)
    return Tokens(text=tokens.text, tokens=tuple(names), offsets=tuple(spans), special=tuple(specials), unit="word")


def _membership(groups: list[list[int]], n_tokens: int) -> np.ndarray:
    """``word_of[token]``: the word index of every token."""
    word_of = np.empty(n_tokens, dtype=np.int64)
    for w, group in enumerate(groups):
        word_of[group] = w
    return word_of


def _aggregate_layer(layer: LayerMap, key_word_of: np.ndarray, n_key_words: int, query_word_of: np.ndarray) -> LayerMap:
    weights = layer.weights  # [head, row, key]
    # Sum over keys of a word: keys of one word are contiguous, so reduceat over word starts works.
    key_starts = np.flatnonzero(np.r_[True, key_word_of[1:] != key_word_of[:-1]])
    summed = np.add.reduceat(weights, key_starts, axis=-1) if weights.shape[-1] else weights
    assert summed.shape[-1] == n_key_words
    # Mean over the captured query rows of a word (rows may be a subset, in any order).
    row_words = query_word_of[np.asarray(layer.rows, dtype=np.int64)]
    words, inverse, counts = np.unique(row_words, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(inverse[order]) != 0])
    pooled = np.add.reduceat(summed[:, order].astype(np.float64), starts, axis=1) / counts[None, :, None]
    return LayerMap(layer.key, layer.heads, tuple(int(w) for w in words), pooled.astype(np.float32))


def aggregate_words(result: AttentionResult, split_punctuation: bool = False) -> AttentionResult:
    """The word view of ``result``: maps ``[head, query_word, key_word]``; the input is unchanged."""
    if result.source.unit == "word":
        raise HeadmapError("this result is already aggregated into words")
    sides: dict[int, tuple[Tokens, np.ndarray, int]] = {}
    for tokens in filter(None, (result.source, result.target)):
        groups = word_groups(tokens, split_punctuation)
        sides[id(tokens)] = (_word_tokens(tokens, groups), _membership(groups, len(tokens)), len(groups))
    layers = []
    for layer in result.layers:
        _, key_word_of, n_key_words = sides[id(result.key_tokens(layer.key))]
        _, query_word_of, _ = sides[id(result.query_tokens(layer.key))]
        layers.append(_aggregate_layer(layer, key_word_of, n_key_words, query_word_of))
    target = sides[id(result.target)][0] if result.target is not None else None
    return replace(result, source=sides[id(result.source)][0], target=target, layers=tuple(layers))
