"""Concurrent captures on one model each give exactly their serial result (dashboards, thread pools)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from tiny_models import build

from headmap.capture import capture

TEXTS = [
    "The trophy didn't fit in the suitcase because it was too big.",
    "Hi there.",
    "Attention is correlation, not causation, so read every map with care.",
    "A fourth text, of yet another length, so that the calls differ in shape.",
    "Short one.",
]
THREADS, ROUNDS = 4, 5


def _same(a, b) -> bool:
    return a.source.tokens == b.source.tokens and all(
        x.key == y.key and x.rows == y.rows and np.array_equal(x.weights, y.weights)
        for x, y in zip(a.layers, b.layers)
    )


@pytest.mark.parametrize("name", ["llama", "albert", "falcon", "bloom", "t5"])
def test_threads_get_their_serial_results(name, bert_tokenizer):
    fast, _ = build(name, bert_tokenizer)
    # Different layer choices per job too, so that early stops and shared modules interleave.
    jobs = [(TEXTS[i % len(TEXTS)], [-1] if i % 3 == 0 else None) for i in range(THREADS * ROUNDS)]
    serial = [capture(fast, text, layers=layers) for text, layers in jobs]
    with ThreadPoolExecutor(THREADS) as pool:
        concurrent = list(pool.map(lambda job: capture(fast, job[0], layers=job[1]), jobs))
    mismatched = [i for i, (a, b) in enumerate(zip(serial, concurrent)) if not _same(a, b)]
    assert not mismatched


def test_threads_on_a_real_model(minilm):
    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(lambda text: capture(minilm, text), TEXTS * ROUNDS))
    for text, got in zip(TEXTS * ROUNDS, results):
        assert _same(got, capture(minilm, text))


def test_taps_are_removed_after_concurrent_use(minilm):
    import torch
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda text: capture(minilm, text, layers=0), TEXTS * 2))
    assert "get_interface" not in vars(ALL_ATTENTION_FUNCTIONS)
    assert torch.nn.functional.scaled_dot_product_attention.__module__ != "headmap.capture.tap"
