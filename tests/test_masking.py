"""Masking special and sink tokens, with and without renormalization."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_result, softmax_rows, tokens_from

from headmap import HeadmapError
from headmap.result import AttentionResult, LayerKey, LayerMap, Stack

CLS_TEXT = "x a b c y"
CLS_SPANS = [(0, 0), (2, 3), (4, 5), (6, 7), (0, 0)]
CLS_SPECIAL = [True, False, False, False, True]


@pytest.fixture
def result() -> AttentionResult:
    tokens = tokens_from(CLS_TEXT, CLS_SPANS, special=CLS_SPECIAL)
    return make_result(tokens, softmax_rows((2, 5, 5), seed=1))


def test_values_by_hand():
    tokens = tokens_from("a b c", [(0, 0), (0, 1), (2, 3)], special=[True, False, False])
    w = np.array([[[1.0, 0.0, 0.0], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]]], dtype=np.float32)
    kept = make_result(tokens, w).mask()
    np.testing.assert_allclose(kept.layers[0].weights[0], [[0.3, 0.2], [0.2, 0.6]], atol=1e-7)
    assert kept.layers[0].rows == (0, 1)
    renormed = make_result(tokens, w).mask(renormalize=True)
    np.testing.assert_allclose(renormed.layers[0].weights[0], [[0.6, 0.4], [0.25, 0.75]], atol=1e-7)
    # A row whose whole mass was masked stays 0 after renormalizing, never NaN.
    everything_on_0 = np.array([[[0.0, 1.0], [1.0, 0.0]]], np.float32)
    all_masked = make_result(tokens_from("a b", [(0, 1), (2, 3)]), everything_on_0)
    all_masked = all_masked.mask(special=False, indices=[0], renormalize=True)
    np.testing.assert_array_equal(all_masked.layers[0].weights[0], [[0.0]])
    assert not np.isnan(all_masked.layers[0].weights).any()


def test_drop_special_keeps_weights(result):
    masked = result.mask(special=True)
    w = result.layers[0].weights
    np.testing.assert_array_equal(masked.layers[0].weights, w[:, 1:4, 1:4])
    assert masked.layers[0].weights.dtype == np.float32
    assert masked.source.tokens == ("a", "b", "c") and masked.source.special == (False,) * 3
    assert masked.source.offsets == ((2, 3), (4, 5), (6, 7))
    np.testing.assert_allclose(masked.layers[0].weights.sum(-1), w[:, 1:4, 1:4].sum(-1), atol=1e-7)
    assert (masked.layers[0].weights.sum(-1) < 1).all()  # honest: the hidden mass stays hidden
    assert masked.notes[-1] == (
        "masked 2 tokens (2 special tokens); rows not renormalized (they sum to less than 1)"
    )


def test_renormalize_and_first_token(result):
    masked = result.mask(special=False, first=True, renormalize=True)
    w = result.layers[0].weights[:, 1:, 1:]
    np.testing.assert_allclose(masked.layers[0].weights, w / w.sum(-1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(masked.layers[0].weights.sum(-1), 1.0, atol=1e-6)
    assert masked.layers[0].rows == (0, 1, 2, 3)
    assert masked.notes[-1] == "masked 1 token (the first token); rows renormalized"


def test_special_first_and_indices_together(result):
    masked = result.mask(special=True, first=True, indices=[-2])  # token 3 ("c"), from the end
    np.testing.assert_array_equal(masked.layers[0].weights, result.layers[0].weights[:, 1:3, 1:3])
    assert masked.source.tokens == ("a", "b")
    assert masked.notes[-1].startswith("masked 3 tokens (2 special tokens, the first token, tokens [3])")


def test_indices_and_subset_rows():
    tokens = tokens_from("a b c", [(0, 1), (2, 3), (4, 5)])
    w = softmax_rows((1, 2, 3))
    result = make_result(tokens, w, rows=(2, 0))
    masked = result.mask(special=False, indices=[1])
    assert masked.layers[0].rows == (1, 0)  # token 2 is now token 1
    np.testing.assert_array_equal(masked.layers[0].weights, w[:, :, [0, 2]])
    dropped_row = result.mask(special=False, indices=[2])
    assert dropped_row.layers[0].rows == (0,)
    np.testing.assert_array_equal(dropped_row.layers[0].weights, w[:, 1:, :2])


def test_realistic_map_with_cls_and_sep():
    n = 40
    spans = [(0, 0)] + [(2 * i, 2 * i + 1) for i in range(n - 2)] + [(0, 0)]
    tokens = tokens_from(" ".join("w" * (n - 2)), spans, special=[True] + [False] * (n - 2) + [True])
    w = softmax_rows((9, n, n), seed=11)
    w[:, :, 0] += 5.0  # a strong [CLS] sink, as real encoders have
    w /= w.sum(-1, keepdims=True)
    result = make_result(tokens, w)
    masked = result.mask(renormalize=True).layers[0].weights
    inner = w[:, 1:-1, 1:-1]
    np.testing.assert_allclose(masked, inner / inner.sum(-1, keepdims=True), atol=1e-6)
    assert masked.shape == (9, n - 2, n - 2)
    assert masked.max() > 3 * inner.max()  # the point: the rest of the map gains contrast


def test_encoder_decoder_sides():
    source = tokens_from("a b c", [(0, 1), (2, 3), (4, 5), (0, 0)], special=[False, False, False, True])
    target = tokens_from("d e", [(0, 0), (0, 1), (2, 3)], special=[True, False, False])
    cross = softmax_rows((1, 3, 4), seed=2)
    decoder = softmax_rows((1, 3, 3), seed=3)
    encoder = softmax_rows((1, 4, 4), seed=4)
    result = AttentionResult(
        model="hand-made",
        source=source,
        target=target,
        num_heads=1,
        num_layers={Stack.ENCODER: 1, Stack.DECODER: 1, Stack.CROSS: 1},
        layers=(
            LayerMap(LayerKey(Stack.ENCODER, 0), (0,), tuple(range(4)), encoder),
            LayerMap(LayerKey(Stack.DECODER, 0), (0,), tuple(range(3)), decoder),
            LayerMap(LayerKey(Stack.CROSS, 0), (0,), tuple(range(3)), cross),
        ),
    )
    masked = result.mask(special=True, indices=[0])  # indices are source positions
    assert masked.source.tokens == ("b", "c") and masked.target.tokens == ("d", "e")
    np.testing.assert_array_equal(masked.layer("encoder.0").weights, encoder[:, 1:3, 1:3])
    np.testing.assert_array_equal(masked.layer("decoder.0").weights, decoder[:, 1:, 1:])
    # cross-attention: target rows (the special first one gone), source keys
    np.testing.assert_array_equal(masked.layer("cross.0").weights, cross[:, 1:, 1:3])
    assert masked.notes[-1].startswith("masked 2 tokens (1 special token, tokens [0]) and 1 target token")


def test_errors_notes_and_input_untouched(result):
    before = result.layers[0].weights.copy()
    with pytest.raises(HeadmapError, match="every source token"):
        result.mask(special=True, indices=[1, 2, 3])
    with pytest.raises(HeadmapError, match="out of range"):
        result.mask(indices=[9])
    with pytest.raises(HeadmapError, match="log10"):
        result.normalize("log").mask(renormalize=True)
    once = result.mask(first=True)
    twice = once.mask(special=False, first=True)
    assert len(twice.notes) == 2 and twice.source.tokens == ("b", "c")
    np.testing.assert_array_equal(result.layers[0].weights, before)
    assert len(result.source) == 5 and result.notes == ()
