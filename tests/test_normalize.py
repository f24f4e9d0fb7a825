"""Display normalizations: values, composition, captions, errors; the input never changes."""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers import make_result, softmax_rows, tokens_from

from headmap import HeadmapError
from headmap.view.normalize import (
    Log,
    Normalization,
    Renorm,
    Threshold,
    TopK,
    Window,
    describe_normalization,
    parse_normalization,
)

HAND = np.array(
    [[[0.10, 0.40, 0.30, 0.20], [0.25, 0.25, 0.25, 0.25], [0.00, 0.05, 0.15, 0.80]]], dtype=np.float32
)


@pytest.fixture
def hand():
    return make_result(tokens_from("a b c d", [(0, 1), (2, 3), (4, 5), (6, 7)]), HAND.copy(), rows=(0, 1, 3))


@pytest.fixture
def result():
    tokens = tokens_from("a b c d e f g h", [(2 * i, 2 * i + 1) for i in range(8)])
    return make_result(tokens, softmax_rows((9, 8, 8), seed=3))


def f32(values: list) -> np.ndarray:
    """Expected values in the maps' float32, so exact comparisons compare like with like."""
    return np.array(values, dtype=np.float32)


def weights(spec: str, res) -> np.ndarray:
    return res.normalize(spec).layers[0].weights


# -- values on a hand-made map -----------------------------------------------------------------
def test_topk_by_hand(hand):
    expected = f32(
        [
            [0.0, 0.40, 0.30, 0.0],
            [0.25, 0.25, 0.0, 0.0],  # four-way tie: the earliest keys are kept
            [0.0, 0.0, 0.15, 0.80],
        ]
    )
    np.testing.assert_array_equal(weights("topk:2", hand)[0], expected)
    np.testing.assert_array_equal(weights("topk:9", hand), HAND)  # k beyond the keys keeps all


def test_window_uses_the_rows_positions(hand):
    # rows are query tokens 0, 1 and 3: the third row's window is around key 3, not key 2
    expected = f32([[0.10, 0.40, 0.0, 0.0], [0.25, 0.25, 0.25, 0.0], [0.0, 0.0, 0.15, 0.80]])
    np.testing.assert_array_equal(weights("window:1", hand)[0], expected)
    diagonal = f32([[0.10, 0, 0, 0], [0, 0.25, 0, 0], [0, 0, 0, 0.80]])
    np.testing.assert_array_equal(weights("window:0", hand)[0], diagonal)


def test_threshold_log_and_renorm_by_hand(hand):
    expected = f32(
        [
            [0.0, 0.40, 0.30, 0.20],  # 0.20 itself is kept: "below T" is strict
            [0.25, 0.25, 0.25, 0.25],
            [0.0, 0.0, 0.0, 0.80],
        ]
    )
    np.testing.assert_array_equal(weights("threshold:0.2", hand)[0], expected)
    renormed = [[0.0, 4 / 9, 3 / 9, 2 / 9], [0.25, 0.25, 0.25, 0.25], [0.0, 0.0, 0.0, 1.0]]
    np.testing.assert_allclose(weights("threshold:0.2,renorm", hand)[0], renormed, atol=1e-7)
    logs = weights("log", hand)[0]
    np.testing.assert_allclose(logs[2], [-6.0, np.log10(0.05), np.log10(0.15), np.log10(0.8)], atol=1e-6)
    assert logs.min() >= -6.0 and logs.max() <= 0.0
    zero_row = make_result(tokens_from("a b", [(0, 1), (2, 3)]), f32([[[0.0, 0.0], [0.3, 0.1]]]))
    np.testing.assert_array_equal(weights("renorm", zero_row)[0], f32([[0.0, 0.0], [0.75, 0.25]]))


def test_order_of_steps_matters(hand):
    # renorm first: the row [.1 .4 .3 .2] stays; topk then keeps .4 and .3, summing to .7
    np.testing.assert_allclose(weights("renorm,topk:2", hand)[0, 0], [0, 0.4, 0.3, 0], atol=1e-7)
    np.testing.assert_allclose(weights("topk:2,renorm", hand)[0, 0], [0, 4 / 7, 3 / 7, 0], atol=1e-7)


# -- realistic maps ---------------------------------------------------------------------------
def test_topk_keeps_exactly_the_k_largest(result):
    w = result.layers[0].weights
    out = weights("topk:3", result)
    assert out.dtype == np.float32 and out.shape == w.shape
    assert ((out > 0).sum(-1) == 3).all()
    np.testing.assert_array_equal(np.sort(out, -1)[..., -3:], np.sort(w, -1)[..., -3:])
    kept = out > 0
    assert (w[kept].reshape(9, 8, 3).min(-1) >= np.where(kept, -1, w).max(-1)).all()
    ties = make_result(tokens_from("a b c", [(0, 1), (2, 3), (4, 5)]), np.full((2, 3, 3), 1 / 3, np.float32))
    assert ((weights("topk:1", ties) > 0).sum(-1) == 1).all()


@pytest.mark.parametrize("k", [3, 40])  # the argmax path (k <= 32) and the partition path
def test_topk_ties_keep_the_earliest_keys(k):
    rng = np.random.default_rng(12)
    w = (rng.integers(0, 6, size=(2, 8, 64)) / 10).astype(np.float32)  # every row full of ties
    res = make_result(tokens_from("x" * 64, [(i, i + 1) for i in range(64)]), w, rows=tuple(range(8)))
    # stable sort of -w: among equal weights the earlier key comes first
    best = np.argsort(-w, axis=-1, kind="stable")[..., :k]
    expected = np.zeros_like(w)
    np.put_along_axis(expected, best, np.take_along_axis(w, best, -1), -1)
    np.testing.assert_array_equal(weights(f"topk:{k}", res), expected)


def test_window_and_threshold_on_random_rows(result):
    w = result.layers[0].weights
    q, k = np.indices(w.shape[1:])
    win = weights("window:2", result)
    np.testing.assert_array_equal(win[:, np.abs(q - k) <= 2], w[:, np.abs(q - k) <= 2])
    assert (win[:, np.abs(q - k) > 2] == 0).all()
    np.testing.assert_array_equal(weights("threshold:0.05", result), np.where(w >= 0.05, w, 0))
    both = weights("window:2,renorm", result)
    np.testing.assert_allclose(both.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(both, win / win.sum(-1, keepdims=True), atol=1e-6)


def test_log_is_labelled_and_final(result):
    out = result.normalize("topk:4,log")
    np.testing.assert_allclose(
        out.layers[0].weights, np.log10(np.maximum(weights("topk:4", result), 1e-6)), atol=1e-6
    )
    assert out.normalization.caption == "top-4 per row, then log10 weight (floor 1e-6)"
    assert parse_normalization("topk:4,log").is_log and not parse_normalization("topk:4").is_log
    with pytest.raises(HeadmapError, match="log10"):
        out.normalize("renorm")
    assert out.normalize("raw") is out


# -- parsing, captions, composition ------------------------------------------------------------
def test_parse_gives_typed_steps():
    norm = parse_normalization(" TopK:3 , window:2,threshold:0.05,renorm,log")
    assert norm.steps == (TopK(3), Window(2), Threshold(0.05), Renorm(), Log())
    assert parse_normalization(norm.spec()) == norm
    assert norm.spec() == "topk:3,window:2,threshold:0.05,renorm,log"
    assert parse_normalization("raw") == parse_normalization("") == Normalization()
    assert parse_normalization("raw").is_raw and parse_normalization("raw").describe() == "raw"


def test_captions():
    assert describe_normalization("topk:3,renorm") == "top-3 per row, then rows renormalized"
    assert describe_normalization("threshold:0.05") == "weights ≥ 0.05"
    assert describe_normalization("window:2") == "window ±2 around the query"
    assert describe_normalization("raw") == "raw"


def test_composition_and_input_untouched(result):
    before = result.layers[0].weights.copy()
    assert result.normalize("raw") is result and result.normalization.caption == "raw"
    out = result.normalize("topk:3,renorm")
    assert out.normalization.caption == "top-3 per row, then rows renormalized"
    np.testing.assert_allclose(out.layers[0].weights.sum(-1), 1.0, atol=1e-6)
    again = out.normalize("window:1")
    assert (
        again.normalization.caption
        == "top-3 per row, then rows renormalized, then window ±1 around the query"
    )
    np.testing.assert_array_equal(result.layers[0].weights, before)
    assert out.layers[0].weights is not result.layers[0].weights


@pytest.mark.parametrize(
    "spec, message",
    [
        ("bogus", "unknown normalization 'bogus'; valid forms are raw, topk:K"),
        ("topk", "topk needs a value, e.g. 'topk:3'"),
        ("window", "window needs a value"),
        ("topk:0", "topk keeps K >= 1"),
        ("topk:x", "whole number"),
        ("topk:2.5", "whole number"),
        ("window:-1", "finite value >= 0"),
        ("threshold:-1", "finite value >= 0"),
        ("threshold:nan", "finite value >= 0"),
        ("threshold:abc", "takes a number"),
        ("log:2", "log takes no value"),
        ("topk:3,,renorm", "empty step"),
        ("log,renorm", "'renorm' cannot follow 'log'"),
        ("log,topk:2", "log must be the last step"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(HeadmapError, match=re.escape(message)):
        parse_normalization(spec)
    with pytest.raises(HeadmapError, match="valid forms|last step"):
        parse_normalization(spec)
