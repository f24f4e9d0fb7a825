"""Alignment of text with time: DTW word timings and the alignment-head finder on planted attention."""

from __future__ import annotations

import numpy as np

from headmap.analysis.alignment import alignment_heads, dtw, head_score, token_times
from headmap.result import AttentionResult, LayerKey, LayerMap, Stack
from headmap.tokens import Frames, Tokens

SPANS = [(0, 8), (8, 20), (20, 26), (26, 40)]  # frames each of 4 tokens is spoken over, of 50


def diagonal(noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """``[tokens, frames]`` softmax-like rows: each token attends over its own span."""
    rng = np.random.default_rng(seed)
    rows = np.full((len(SPANS), 50), 0.01) + noise * rng.random((len(SPANS), 50))
    for t, (a, b) in enumerate(SPANS):
        rows[t, a:b] += 1.0
    return rows / rows.sum(axis=1, keepdims=True)


def test_dtw_follows_the_cheapest_monotonic_path():
    cost = np.full((3, 4), 5.0)
    for t, f in [(0, 0), (0, 1), (1, 2), (2, 3)]:
        cost[t, f] = 0.0
    tokens, frames = dtw(cost)
    assert list(zip(tokens.tolist(), frames.tolist())) == [(0, 0), (0, 1), (1, 2), (2, 3)]


def test_token_times_of_a_diagonal_attention():
    times = token_times(diagonal(noise=0.05)[None], seconds=0.02)
    expected = np.array([[a, b] for a, b in SPANS], dtype=float) * 0.02
    expected[-1, 1] = 50 * 0.02  # the path runs on through the silence after the last token
    assert np.abs(times[:, 0] - expected[:, 0]).max() <= 0.02 + 1e-9
    assert np.abs(times[:-1, 1] - expected[:-1, 1]).max() <= 0.02 + 1e-9


def result_with(planted: tuple[int, int]) -> AttentionResult:
    """Two cross layers of 4 heads of noise, one planted monotonic head, one peaky but jumping head."""
    rng = np.random.default_rng(1)
    layers = []
    for index in range(2):
        weights = rng.random((4, len(SPANS), 50)) + 0.5
        if (index, 2) != planted:
            weights[2] = 0.01
            for t, f in enumerate([40, 3, 30, 10]):  # peaky, but back and forth in time
                weights[2, t, f : f + 4] = 1.0
        if index == planted[0]:
            weights[planted[1]] = diagonal()
        weights /= weights.sum(axis=-1, keepdims=True)
        layers.append(LayerMap(LayerKey(Stack.CROSS, index), (0, 1, 2, 3), (0, 1, 2, 3), weights))
    frames = Tokens("clip", tuple(f"{i * 0.02:.2f}s" for i in range(50)), ((0, 0),) * 50, (False,) * 50,
                    unit="frame", frames=Frames(0.02, 50))  # fmt: skip
    target = Tokens("a b c d", ("a", "b", "c", "d"), ((0, 0),) * 4, (False,) * 4)
    return AttentionResult("planted", frames, tuple(layers), {Stack.CROSS: 2}, 4, target=target)


def test_alignment_heads_find_the_planted_head():
    for planted in [(1, 3), (0, 1)]:
        best = alignment_heads(result_with(planted), top=3)
        assert (best[0].key.index, best[0].head) == planted
        assert best[0].score > 0.9 and best[1].score < 0.5
    assert head_score(diagonal()) > 0.9
