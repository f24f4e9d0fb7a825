"""Peak-preserving max-pooling and the labels of pooled axes."""

from __future__ import annotations

import time

import numpy as np
import pytest

from headmap.view.downsample import (
    axis_labels,
    downsample,
    downsample_note,
    max_abs_pool,
    max_pool,
    pool_factor,
    pooled_labels,
    thin_ticks,
    visible,
)


def brute_pool(w: np.ndarray, fq: int, fk: int) -> np.ndarray:
    n_q, n_k = w.shape[-2:]
    out = np.empty((*w.shape[:-2], -(-n_q // fq), -(-n_k // fk)), w.dtype)
    for i in range(out.shape[-2]):
        for j in range(out.shape[-1]):
            out[..., i, j] = w[..., i * fq : (i + 1) * fq, j * fk : (j + 1) * fk].max(axis=(-2, -1))
    return out


@pytest.mark.parametrize(
    "shape, fq, fk", [((10, 7), 3, 2), ((2, 9, 9), 4, 4), ((3, 1, 5), 1, 5), ((6, 6), 1, 1)]
)
def test_max_pool_keeps_every_block_maximum_exactly(shape, fq, fk):
    w = np.random.default_rng(0).random(shape).astype(np.float32)
    np.testing.assert_array_equal(max_pool(w, fq, fk), brute_pool(w, fq, fk))
    # Log-scaled maps are negative: the ragged last block must not be filled with anything larger.
    log = np.log10(w)
    np.testing.assert_array_equal(max_pool(log, fq, fk), brute_pool(log, fq, fk))


def test_downsample_factors_and_untouched_small_maps():
    w = np.random.default_rng(1).random((2, 300, 40)).astype(np.float32)
    pooled, fq, fk = downsample(w, 128)
    assert (fq, fk) == (3, 1) and pooled.shape == (2, 100, 40)
    same, fq, fk = downsample(w, 512)
    assert same is w and (fq, fk) == (1, 1)
    assert pool_factor(8192, 512) == 16 and pool_factor(8193, 512) == 17 and pool_factor(5, 512) == 1
    with pytest.raises(ValueError):
        pool_factor(10, 0)


def test_long_map_peak_survives_quickly():
    n = 8192
    w = np.full((n, n), 1e-5, np.float32)
    w[5000, 17] = 0.93
    w[8191, 8191] = 0.5  # in the last block
    start = time.perf_counter()
    pooled, fq, fk = downsample(w, 512)
    elapsed = time.perf_counter() - start
    print(f"8192x8192 float32 -> 512x512 in {elapsed:.3f} s")
    assert (fq, fk) == (16, 16) and pooled.shape == (512, 512)
    assert pooled.max() == np.float32(0.93) and pooled[5000 // 16, 17 // 16] == np.float32(0.93)
    assert pooled[-1, -1] == np.float32(0.5)
    assert elapsed < 5  # generous: the point is "no Python loop", not a benchmark


def test_max_abs_pool_keeps_negative_peaks_with_sign():
    d = np.zeros((4, 4), np.float32)
    d[0, 0], d[1, 1] = 0.2, -0.7
    d[2, 3] = 0.4
    np.testing.assert_array_equal(max_abs_pool(d, 2, 2), np.array([[-0.7, 0], [0, 0.4]], np.float32))


def test_note_labels_and_ticks():
    assert downsample_note((8192, 8192), 16, 16) == (
        "downsampled 8192x8192 -> 512x512 by max-pooling 16x16 blocks (peaks preserved)"
    )
    assert downsample_note((10, 10), 1, 1) == ""
    labels = [f"t{i}" for i in range(10)]
    assert pooled_labels(labels, 4) == ["t0…t3 [0-3]", "t4…t7 [4-7]", "t8…t9 [8-9]"]
    assert pooled_labels(labels, 9) == ["t0…t8 [0-8]", "t9 [9-9]"]
    assert pooled_labels(["averyveryverylongtoken", "b"], 2, width=6) == ["avery……b [0-1]"]
    positions, texts = thin_ticks(labels, 4)
    assert positions == [0, 3, 6, 9] and texts == ["t0", "t3", "t6", "t9"]
    assert thin_ticks(labels, 0) == ([], [])
    assert visible("a\nb\tc") == "a\\nb\\tc"
    positions, texts = axis_labels(["x"] * 100, 10, 5)
    assert len(texts) == 5 and texts[0] == "x…x [0-9]"
