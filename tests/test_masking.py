"""Masking special and sink tokens, with and without renormalization."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_result, softmax_rows, tokens_from

from headmap import HeadmapError


@pytest.fixture
def result():
    tokens = tokens_from("x a b c y", [(0, 0), (2, 3), (4, 5), (6, 7), (0, 0)], special=[True, False, False, False, True])
    return make_result(tokens, softmax_rows((2, 5, 5), seed=1))


def test_drop_special_keeps_weights(result):
    masked = result.mask(special=True)
    w = result.layers[0].weights
    np.testing.assert_array_equal(masked.layers[0].weights, w[:, 1:4][:, :, 1:4])
    assert masked.source.tokens == ("a", "b", "c")
    assert (masked.layers[0].weights.sum(-1) < 1).all()
    assert any("rows not renormalized" in n for n in masked.notes)


def test_renormalize_and_first_token(result):
    masked = result.mask(special=False, first=True, renormalize=True)
    w = result.layers[0].weights[:, 1:, 1:]
    np.testing.assert_allclose(masked.layers[0].weights, w / w.sum(-1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(masked.layers[0].weights.sum(-1), 1.0, atol=1e-6)
    assert masked.layers[0].rows == (0, 1, 2, 3)


def test_indices_and_subset_rows():
    tokens = tokens_from("a b c", [(0, 1), (2, 3), (4, 5)])
    w = softmax_rows((1, 2, 3))
    result = make_result(tokens, w, rows=(2, 0))
    masked = result.mask(special=False, indices=[1])
    assert masked.layers[0].rows == (1, 0)  # token 2 is now token 1
    np.testing.assert_array_equal(masked.layers[0].weights, w[:, :, [0, 2]])


def test_errors(result):
    with pytest.raises(HeadmapError, match="every token"):
        result.mask(special=True, indices=[1, 2, 3])
    with pytest.raises(HeadmapError, match="out of range"):
        result.mask(indices=[9])
