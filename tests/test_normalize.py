"""Display normalizations: values, composition, captions, errors; the input never changes."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_result, softmax_rows, tokens_from

from headmap import HeadmapError
from headmap.normalize import describe_normalization, parse_normalization


@pytest.fixture
def result():
    tokens = tokens_from("a b c d e", [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)])
    return make_result(tokens, softmax_rows((2, 5, 5), seed=3))


def test_raw_is_default_and_identity(result):
    assert result.normalization == "raw"
    assert result.normalize("raw") is result


def test_topk_keeps_exactly_k_largest(result):
    out = result.normalize("topk:2").layers[0].weights
    w = result.layers[0].weights
    assert ((out > 0).sum(-1) == 2).all()
    np.testing.assert_array_equal(np.sort(out, -1)[..., -2:], np.sort(w, -1)[..., -2:])
    ties = make_result(tokens_from("a b c", [(0, 1), (2, 3), (4, 5)]), np.full((1, 3, 3), 1 / 3, np.float32))
    assert ((ties.normalize("topk:1").layers[0].weights > 0).sum(-1) == 1).all()


def test_window_threshold_renorm_values(result):
    w = result.layers[0].weights
    win = result.normalize("window:1").layers[0].weights
    q, k = np.indices(w.shape[1:])
    np.testing.assert_array_equal(win[:, np.abs(q - k) <= 1], w[:, np.abs(q - k) <= 1])
    assert (win[:, np.abs(q - k) > 1] == 0).all()
    thr = result.normalize("threshold:0.2").layers[0].weights
    np.testing.assert_array_equal(thr, np.where(w >= 0.2, w, 0))
    both = result.normalize("threshold:0.2,renorm").layers[0].weights
    sums = thr.sum(-1, keepdims=True)
    np.testing.assert_allclose(both, np.divide(thr, sums, out=np.zeros_like(thr), where=sums > 0), atol=1e-7)


def test_log_and_its_label(result):
    out = result.normalize("log")
    np.testing.assert_allclose(out.layers[0].weights, np.log10(np.maximum(result.layers[0].weights, 1e-6)), atol=1e-6)
    assert "log10" in out.normalization and parse_normalization("log").is_log
    with pytest.raises(HeadmapError, match="log"):
        out.normalize("renorm")


def test_composition_caption_and_input_untouched(result):
    before = result.layers[0].weights.copy()
    out = result.normalize("topk:3,renorm")
    assert out.normalization == "top-3 per row, then rows renormalized"
    np.testing.assert_allclose(out.layers[0].weights.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(result.layers[0].weights, before)
    assert out.normalize("window:1").normalization.endswith("then window ±1 tokens")
    assert describe_normalization("threshold:0.05") == "weights ≥ 0.05"


@pytest.mark.parametrize("spec, message", [("bogus", "unknown normalization"), ("topk", "needs a value"),
                                           ("topk:0", "positive"), ("topk:x", "whole number"),
                                           ("threshold:-1", "non-negative"), ("log,renorm", "last")])
def test_bad_specs(spec, message):
    with pytest.raises(HeadmapError, match=message):
        parse_normalization(spec)
