"""Rendering: files, titles, downsampling, escaping of untrusted tokens, diverging differences."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from helpers import make_result, softmax_rows, tokens_from

from headmap import HeadmapError
from headmap.downsample import downsample, max_pool
from headmap.render_html import head_html, notebook_html
from headmap.render_static import plot_diff, plot_grid, plot_head, plot_layer_profile
from headmap.result import LayerKey, Stack

EVIL = "</script><img src=x onerror=alert(1)>"
KEY = LayerKey(Stack.SELF, 0)


def texts_of(fig) -> str:
    return " ".join(t.get_text() for t in fig.findobj(lambda o: hasattr(o, "get_text")))


@pytest.fixture
def small():
    words = ["The", "<b>bold</b>", EVIL, "cat", "sat"]
    text = " ".join(words)
    spans, pos = [], 0
    for w in words:
        spans.append((pos, pos + len(w)))
        pos += len(w) + 1
    return make_result(tokens_from(text, spans), softmax_rows((4, 5, 5)), layer=1, num_layers=3)


@pytest.mark.parametrize("ext, magic", [(".png", b"\x89PNG"), (".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_static_files(small, tmp_path, ext, magic):
    for head in (2, None):
        path = small.render(tmp_path / f"m{head}{ext}", layer=1, head=head)
        assert path.read_bytes()[:4] == magic


def test_title_names_layer_head_normalization_and_warning(small):
    fig = plot_head(small.normalize("topk:2"), LayerKey(Stack.SELF, 1), 3)
    text = texts_of(fig)
    assert "layer 1" in text and "head 3" in text and "top-2 per row" in text and "not causation" in text
    grid = texts_of(plot_grid(small, LayerKey(Stack.SELF, 1)))
    assert "layer 1" in grid and "head 0" in grid and "head 3" in grid and "raw" in grid


def test_max_pool_keeps_block_maxima():
    rng = np.random.default_rng(0)
    w = rng.random((2, 10, 7)).astype(np.float32)
    pooled = max_pool(w, 3, 2)
    assert pooled.shape == (2, 4, 4)
    for i in range(4):
        for j in range(4):
            np.testing.assert_array_equal(pooled[:, i, j], w[:, 3 * i:3 * i + 3, 2 * j:2 * j + 2].max(axis=(1, 2)))
    log = np.log10(w)  # negative values: padding must never win
    assert (max_pool(log, 3, 2) == np.log10(pooled)).all()


def test_long_map_is_pooled_and_says_so(tmp_path):
    n = 8192
    w = np.zeros((1, n, n), np.float32)
    w[0, 5000, 17] = 0.93  # one isolated peak among 67M cells
    tokens = tokens_from("x" * n, [(i, i + 1) for i in range(n)])
    result = make_result(tokens, w)
    pooled, fq, fk = downsample(w, 256)
    assert pooled.max() == np.float32(0.93) and (fq, fk) == (32, 32)
    start = time.perf_counter()
    fig = plot_head(result, KEY, 0)
    png = tmp_path / "long.png"
    fig.savefig(png)
    elapsed = time.perf_counter() - start
    print(f"8192x8192 PNG in {elapsed:.2f} s")
    assert "max-pooling 32x32 blocks" in texts_of(fig)
    page = head_html(result, KEY, 0)
    assert "max-pooling 16x16 blocks" in page and len(page) < 10e6


def test_html_escapes_untrusted_tokens(small):
    page = head_html(small, LayerKey(Stack.SELF, 1), 0)
    assert "<img src=x onerror" not in page and "</script><img" not in page
    assert "<b>bold</b>" not in page  # would render bold inside plotly labels
    assert re.search(r"<script[^>]+src=", page) is None  # plotly.js embedded, nothing fetched
    assert "query: %{y}" in page and "not causation" in page
    nb = notebook_html(small)
    assert "<img src=x" not in nb and nb.count("<img") == 1 and "data:image/png;base64," in nb


def test_diff_is_diverging_and_symmetric(small):
    other = make_result(small.source, softmax_rows((4, 5, 5), seed=9), layer=1, num_layers=3)
    fig = plot_diff(small, other, LayerKey(Stack.SELF, 1), 0)
    image = fig.axes[0].images[0]
    vmin, vmax = image.get_clim()
    assert vmin == -vmax and vmax > 0
    assert image.get_cmap().name == "RdBu_r"
    data = image.get_array()
    expected = small.head(1, 0) - other.head(1, 0)
    np.testing.assert_allclose(data, expected, atol=1e-7)
    with pytest.raises(HeadmapError, match="shape"):
        plot_diff(small, make_result(tokens_from("a", [(0, 1)]), softmax_rows((4, 1, 1)), layer=1, num_layers=3),
                  LayerKey(Stack.SELF, 1), 0)


def test_layer_profile_and_colormaps(small, tmp_path):
    fig = plot_layer_profile(small)
    assert "entropy" in texts_of(fig) and "layer-depth" in texts_of(fig)
    with pytest.raises(HeadmapError, match="unknown colormap"):
        plot_head(small, LayerKey(Stack.SELF, 1), 0, cmap="nope")
    with pytest.raises(HeadmapError, match="extension"):
        small.render(tmp_path / "x.gif", layer=1)
    with pytest.raises(HeadmapError, match="does not exist"):
        small.render(tmp_path / "missing" / "x.png", layer=1)


def test_notebook_repr(small):
    assert small._repr_html_().startswith("<div>")
