"""Which cross-attention heads of a speech model (Whisper) align text with time, and when each token is
spoken, found as Whisper's own word timestamps find them: a median filter over time, then dynamic time
warping (DTW) for the monotonic path through the token x frame attention.

A head is scored by how much of each token's attention lies near its own DTW path: a head whose
attention walks forward through the clip token by token scores near 1, a diffuse or jumping head near
the share of frames the band covers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import median_filter

from headmap.errors import HeadmapError
from headmap.result import AttentionResult, LayerKey, Stack
from headmap.tokens import Tokens
from headmap.view.words import word_groups, word_tokens

__all__ = [
    "AlignmentHead",
    "Word",
    "alignment_heads",
    "alignment_path",
    "dtw",
    "token_times",
    "word_times",
]


@dataclass(frozen=True)
class AlignmentHead:
    """One cross-attention head and its alignment ``score`` (0..1: attention share near its path)."""

    key: LayerKey
    head: int
    score: float


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cheapest monotonic path through ``cost`` ``[tokens, frames]`` from its first cell to its last,
    each step one token, one frame or both forward: ``(token indices, frame indices)`` along it."""
    rows, cols = cost.shape
    total = np.full((rows + 1, cols + 1), np.inf)
    step = np.zeros((rows + 1, cols + 1), dtype=np.int8)
    total[0, 0] = 0.0
    for j in range(1, cols + 1):
        for i in range(1, rows + 1):
            options = (total[i - 1, j - 1], total[i - 1, j], total[i, j - 1])
            choice = int(np.argmin(options))
            total[i, j] = cost[i - 1, j - 1] + options[choice]
            step[i, j] = choice
    i, j = rows, cols
    path: list[tuple[int, int]] = []
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        choice = int(step[i, j])
        i, j = (i - 1, j - 1) if choice == 0 else ((i - 1, j) if choice == 1 else (i, j - 1))
    path.reverse()
    tokens, frames = zip(*path)
    return np.asarray(tokens), np.asarray(frames)


def _prepared(weights: np.ndarray, filter_width: int) -> np.ndarray:
    """Whisper's preparation: each head standardized over tokens per frame, median-filtered over time,
    the heads averaged: ``[heads, tokens, frames]`` -> ``[tokens, frames]``."""
    values = np.asarray(weights, dtype=np.float64)
    std = values.std(axis=-2, keepdims=True)
    values = (values - values.mean(axis=-2, keepdims=True)) / np.where(std > 0, std, 1.0)
    if filter_width > 1:
        values = median_filter(values, size=(1, 1, filter_width), mode="nearest")
    averaged: np.ndarray = values.mean(axis=0)
    return averaged


def alignment_path(weights: np.ndarray, filter_width: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """The DTW path through the cross-attention ``weights`` ``[heads, tokens, frames]`` (or one head's
    ``[tokens, frames]``) of the alignment heads, over the audible frames only."""
    values = weights[None] if weights.ndim == 2 else weights
    if values.ndim != 3 or values.shape[1] == 0 or values.shape[2] == 0:
        raise HeadmapError(f"alignment needs [heads, tokens, frames] weights, not shape {weights.shape}")
    return dtw(-_prepared(values, filter_width))


def token_times(weights: np.ndarray, seconds: float, filter_width: int = 7) -> np.ndarray:
    """``[tokens, 2]`` start and end time in seconds of each token, from the DTW path through
    ``weights`` (frames of ``seconds`` each): a token starts where the path first reaches it and ends
    where the next one starts (the last where the path ends)."""
    tokens, frames = alignment_path(weights, filter_width)
    count = int(tokens.max()) + 1
    starts = np.array([frames[np.argmax(tokens == t)] for t in range(count)], dtype=np.float64)
    ends = np.append(starts[1:], frames[-1] + 1)
    return np.stack([starts, ends], axis=1) * seconds


@dataclass(frozen=True)
class Word:
    """One spoken word of the target: its text, its ``tokens`` (indices into the target) and its span
    ``start``..``end`` in seconds."""

    word: str
    tokens: tuple[int, ...]
    start: float
    end: float


def word_times(target: Tokens, times: np.ndarray) -> list[Word]:
    """The target's words with their spans, from each token's ``times`` ``[tokens, 2]`` (seconds).

    As Whisper's own word timestamps do: subword tokens merge into words (:func:`word_groups`, by
    the tokenizer's offsets), a word spans from its first token's start to its last token's end, and
    special tokens (the decoder's start token, end of text) are no words.
    """
    spans = np.asarray(times, dtype=np.float64)
    if spans.shape != (len(target), 2):
        raise HeadmapError(f"word timings need [tokens, 2] times for {len(target)} tokens, not {spans.shape}")
    groups = word_groups(target)
    merged = word_tokens(target, groups)
    words: list[Word] = []
    for group, name, (start, end) in zip(groups, merged.tokens, merged.offsets):
        # A run of whitespace alone (a newline token) is spoken by no one.
        if target.special[group[0]] or (end > start and not target.text[start:end].strip()):
            continue
        words.append(Word(name, tuple(group), float(spans[group[0], 0]), float(spans[group[-1], 1])))
    return words


def head_score(weights: np.ndarray, band: int = 2, filter_width: int = 7) -> float:
    """Share of each token's attention ``[tokens, frames]`` within ``band`` frames of the head's own
    DTW path, averaged over tokens."""
    tokens, frames = alignment_path(weights, filter_width)
    rows = np.asarray(weights, dtype=np.float64)
    near = np.zeros_like(rows, dtype=bool)
    for t, f in zip(tokens, frames):
        near[t, max(0, f - band) : f + band + 1] = True
    mass = rows.sum(axis=1)
    shares = (rows * near).sum(axis=1) / np.where(mass > 0, mass, 1.0)
    return float(shares.mean())


def alignment_heads(
    result: AttentionResult, top: int = 5, frames: int | None = None, band: int = 2, filter_width: int = 7
) -> list[AlignmentHead]:
    """The ``top`` cross-attention heads of ``result`` best aligned with time, best first; ``frames``:
    the audible frames (default: the source's ``Frames.audible``, else all)."""
    audible = frames
    if audible is None and result.source.frames is not None:
        audible = result.source.frames.audible
    scored: list[AlignmentHead] = []
    for layer in result.layers:
        if layer.key.stack is not Stack.CROSS:
            continue
        for h, head in enumerate(layer.heads):
            rows = layer.weights[h][:, :audible]
            scored.append(AlignmentHead(layer.key, head, head_score(rows, band, filter_width)))
    if not scored:
        raise HeadmapError(
            "no cross-attention captured: capture a speech model's cross layers (e.g. cross.*)"
        )
    return sorted(scored, key=lambda a: -a.score)[:top]
