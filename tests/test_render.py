"""Rendering without a model: files, titles, downsampling, escaping of untrusted tokens, differences."""

from __future__ import annotations

import re
import time

import matplotlib.pyplot as plt
import numpy as np
import pytest
from helpers import make_result, softmax_rows, tokens_from

from headmap import CAUSATION_WARNING, HeadmapError
from headmap.render.files import render_to_file
from headmap.render.html import grid_html, head_html
from headmap.render.profile import plot_layer_profile
from headmap.render.static import plot_diff, plot_grid, plot_head
from headmap.result import AttentionResult, LayerKey, LayerMap, Stack
from headmap.tokens import Tokens

EVIL = "</script><img src=x onerror=alert(1)>"
BOLD = "<b>bold</b>"
KEY = LayerKey(Stack.SELF, 1)
MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".pdf": b"%PDF-", ".svg": b"<?xml"}


def texts_of(fig) -> str:
    """Every text of a figure, with whitespace normalized (captions are wrapped over lines)."""
    return " ".join(" ".join(t.get_text().split()) for t in fig.findobj(lambda o: hasattr(o, "get_text")))


def words_result(
    words: list[str], heads: int = 4, seed: int = 0, model: str = "hand-made"
) -> AttentionResult:
    text = " ".join(words)
    spans, pos = [], 0
    for w in words:
        spans.append((pos, pos + len(w)))
        pos += len(w) + 1
    n = len(words)
    return make_result(
        tokens_from(text, spans), softmax_rows((heads, n, n), seed=seed), layer=1, num_layers=3, model=model
    )


@pytest.fixture
def small() -> AttentionResult:
    return words_result(["The", BOLD, EVIL, "cat", "sat", "$x$"])


@pytest.fixture(scope="module")
def long_map() -> AttentionResult:
    n = 8192
    w = np.zeros((1, n, n), np.float32)
    w[0, 5000, 17] = 0.93  # one isolated peak among 67M cells
    return make_result(tokens_from("x" * n, [(i, i + 1) for i in range(n)]), w)


@pytest.mark.parametrize("ext", [".png", ".svg", ".pdf"])
def test_static_files_are_valid(small, tmp_path, ext):
    for head in (2, None):
        path = small.render(tmp_path / f"m{head}{ext}", layer=1, head=head)
        assert path.read_bytes().startswith(MAGIC[ext])


def test_titles_name_model_layer_head_normalization_and_warning(small):
    text = texts_of(plot_head(small.normalize("topk:2"), KEY, 3))
    for part in ("hand-made", "layer 1", "head 3", "top-2 per row", CAUSATION_WARNING):
        assert part in text
    grid = texts_of(plot_grid(small, KEY))
    for part in (
        "layer 1",
        "all 4 captured heads",
        "head 0",
        "head 3",
        "normalization: raw",
        "not causation",
    ):
        assert part in grid
    plt.close("all")


def test_log_scale_colorbar_and_range(small):
    fig = plot_head(small.normalize("log"), KEY, 0)
    assert "log10 weight" in texts_of(fig)
    low, high = fig.axes[0].images[0].get_clim()
    assert low < -1 and high <= 0
    low, _ = plot_head(small, KEY, 0).axes[0].images[0].get_clim()
    assert low == 0.0
    plt.close("all")


def test_label_fonts_shrink_with_token_count_but_stay_readable():
    def font(n: int) -> float:
        fig = plot_head(words_result([f"w{i}" for i in range(n)]), KEY, 0)
        labels = fig.axes[0].get_xticklabels()
        assert len(labels) == n  # all 60 tokens are labelled, none thinned
        size = labels[0].get_fontsize()
        plt.close(fig)
        return size

    few, many = font(8), font(60)
    assert many < few and many >= 6


def test_long_map_is_pooled_peak_survives_and_caption_says_so(long_map, tmp_path):
    start = time.perf_counter()
    path = render_to_file(long_map, tmp_path / "long.png", LayerKey(Stack.SELF, 0), 0)
    print(f"8192x8192 map to PNG in {time.perf_counter() - start:.2f} s")
    assert path.read_bytes().startswith(MAGIC[".png"])
    fig = plot_head(long_map, LayerKey(Stack.SELF, 0), 0)
    image = fig.axes[0].images[0].get_array()
    assert (
        image.shape == (256, 256)
        and image.max() == np.float32(0.93)
        and image[5000 // 32, 0] == np.float32(0.93)
    )
    assert "downsampled 8192x8192 -> 256x256 by max-pooling 32x32 blocks (peaks preserved)" in texts_of(fig)
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert ticks[0] == "x…x [0-31]" and len(ticks) < 256  # ranges, thinned
    plt.close(fig)
    start = time.perf_counter()
    page = head_html(long_map, LayerKey(Stack.SELF, 0), 0)
    print(f"8192x8192 map to HTML in {time.perf_counter() - start:.2f} s")
    assert "max-pooling 16x16 blocks" in page and len(page) < 10e6


def test_selected_rows_and_cross_attention_axes():
    source = tokens_from("a b c d", [(0, 1), (2, 3), (4, 5), (6, 7)])
    target = tokens_from("x y", [(0, 1), (2, 3)])
    cross = LayerMap(LayerKey(Stack.CROSS, 0), (0,), (1,), softmax_rows((1, 1, 4)))
    result = AttentionResult(
        "enc-dec", source, (cross,), {Stack.ENCODER: 1, Stack.DECODER: 1, Stack.CROSS: 1}, 1, target=target
    )
    fig = plot_head(result, LayerKey(Stack.CROSS, 0), 0)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["y"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c", "d"]
    assert "cross-attention layer 0" in texts_of(fig) and "showing 1 of 2 query rows" in texts_of(fig)
    profile = plot_layer_profile(result)
    assert np.isnan(profile.axes[1].lines[0].get_ydata()).all()  # no distance across two texts
    plt.close("all")


def test_html_escapes_untrusted_tokens_and_embeds_plotly(small):
    evil_model = words_result(["The", BOLD, EVIL, "cat"], model=EVIL)
    for page in (head_html(small, KEY, 0), grid_html(small, KEY), head_html(evil_model, KEY, 1)):
        assert "<img src=x onerror" not in page and "</script><img" not in page
        assert BOLD not in page  # plotly would render it bold
        assert "&lt;b&gt;bold&lt;" in page  # ...but it is shown, as text
        assert re.search(r"<script[^>]*\bsrc\s*=", page, re.I) is None  # plotly.js embedded, nothing fetched
        assert page.count("<script") == page.count("</script>")  # no token closes a script early
        assert "Plotly.newPlot" in page and len(page) > 1_000_000
        assert "query: %{y}" in page and "key: %{x}" in page and "not causation" in page
    page = head_html(small, KEY, 2, cmap="RdBu_r")
    assert "layer 1" in page and "head 2" in page and "normalization: raw" in page


def test_notebook_display_is_the_page_and_escaped(small):
    # notebook_html (a static summary) is gone: the notebook display is the contract's page().
    nb = small._repr_html_()
    assert nb == small.page() and nb.startswith("<div class='hmv'")
    assert "<img src=x" not in nb and "</script><img" not in nb and "Plotly" not in nb
    assert "<script src=" not in nb  # self-contained
    assert "normalization" in nb and "layer.1" in nb and "not causation" in nb
    assert plt.get_fignums() == []


def test_diff_is_diverging_symmetric_and_exact(small):
    other = words_result(["The", BOLD, EVIL, "cat", "sat", "$x$"], seed=9)
    fig = plot_diff(small, other, KEY, 0)
    image = fig.axes[0].images[0]
    vmin, vmax = image.get_clim()
    assert vmin == -vmax and vmax > 0 and image.get_cmap().name == "RdBu_r"
    np.testing.assert_allclose(image.get_array(), small.head(1, 0) - other.head(1, 0), atol=1e-7)
    assert "difference" in texts_of(fig) and "layer 1" in texts_of(fig)
    short = make_result(tokens_from("a", [(0, 1)]), softmax_rows((4, 1, 1)), layer=1, num_layers=3)
    with pytest.raises(HeadmapError, match="shape"):
        plot_diff(small, short, KEY, 0)
    plt.close("all")


def test_diff_pooling_keeps_negative_peaks():
    n = 600
    a = np.zeros((1, n, n), np.float32)
    b = a.copy()
    a[0, 10, 10], b[0, 300, 300] = 0.3, 0.8
    tokens = tokens_from("y" * n, [(i, i + 1) for i in range(n)])
    fig = plot_diff(make_result(tokens, a), make_result(tokens, b), LayerKey(Stack.SELF, 0), 0)
    data = fig.axes[0].images[0].get_array()
    assert data.min() == np.float32(-0.8) and data.max() == np.float32(0.3)
    assert fig.axes[0].images[0].get_clim() == pytest.approx((-0.8, 0.8))
    plt.close(fig)


def test_colormaps_by_name(small):
    assert plot_head(small, KEY, 0, cmap="magma").axes[0].images[0].get_cmap().name == "magma"
    with pytest.raises(HeadmapError, match=r"unknown colormap 'viridiss'.*viridis.*RdBu_r"):
        plot_head(small, KEY, 0, cmap="viridiss")
    with pytest.raises(HeadmapError, match="unknown colormap"):
        head_html(small, KEY, 0, cmap="nope")
    plt.close("all")


def test_layer_profile_statistics():
    n = 6
    uniform = np.full((1, n, n), 1 / n, np.float32)
    previous = np.zeros((1, n, n), np.float32)
    previous[0, 0, 0] = 1
    previous[0, np.arange(1, n), np.arange(n - 1)] = 1
    tokens = Tokens("abcdef", tuple("abcdef"), tuple((i, i + 1) for i in range(n)), (False,) * n)
    layers = tuple(
        LayerMap(LayerKey(Stack.SELF, i), (0,), tuple(range(n)), w) for i, w in enumerate((uniform, previous))
    )
    result = AttentionResult("hand-made", tokens, layers, {Stack.SELF: 2}, 1)
    fig = plot_layer_profile(result)
    entropy, distance = (ax.lines[0].get_ydata() for ax in fig.axes[:2])
    np.testing.assert_allclose(entropy, [np.log(n), 0.0], atol=1e-6)
    np.testing.assert_allclose(
        distance, [np.mean([np.abs(q - np.arange(n)).mean() for q in range(n)]), 5 / 6]
    )
    text = texts_of(fig)
    assert "entropy (nats)" in text and "layer-depth" in text and "depth" in text and "not causation" in text
    heat = plot_layer_profile(result, head=0, stat="entropy", kind="heatmap")
    assert heat.axes[0].images[0].get_array().shape == (1, 2)  # [head, layer]
    with pytest.raises(HeadmapError, match="entropy, distance"):
        plot_layer_profile(result, stat="nope")
    plt.close("all")


def test_plot_head_on_callers_axes(small):
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    assert plot_head(small, KEY, 0, ax=right) is fig
    assert "head 0" in texts_of(fig) and CAUSATION_WARNING in texts_of(fig)
    plt.close(fig)


def test_render_errors_are_one_clear_line(small, tmp_path, monkeypatch):
    with pytest.raises(HeadmapError, match=r"unknown output extension '\.gif'.*\.png, \.svg, \.pdf, \.html"):
        small.render(tmp_path / "x.gif", layer=1)
    with pytest.raises(HeadmapError, match="does not exist") as missing:
        small.render(tmp_path / "missing" / "x.png", layer=1)
    assert str(tmp_path / "missing" / "x.png") in str(missing.value) and "\n" not in str(missing.value)
    # Root may write anywhere, so simulate a read-only folder.
    monkeypatch.setattr(
        "headmap.render.report.os.access", lambda *args: False
    )  # check_writable lives in render.report
    with pytest.raises(HeadmapError, match=r"cannot write .*ro\.html: permission denied"):
        small.render(tmp_path / "ro.html", layer=1)


def test_many_renders_leave_no_open_figures(small, tmp_path):
    before = len(plt.get_fignums())
    for i in range(25):
        small.render(tmp_path / "again.png", layer=1, head=i % 4, dpi=40)
    small.render(tmp_path / "grid.html", layer=1, head=None)
    assert len(plt.get_fignums()) == before


def test_repr_says_which_heads_were_captured():
    tokens = tokens_from("a b c", [(0, 1), (2, 3), (4, 5)])
    only_4 = LayerMap(LayerKey(Stack.SELF, 1), (4,), (0, 1, 2), softmax_rows((1, 3, 3)))
    result = AttentionResult("m", tokens, (only_4,), {Stack.SELF: 2}, num_heads=9)
    assert "heads=[4] of 9" in repr(result) and "heads=9" not in repr(result)
    full = make_result(tokens, softmax_rows((3, 3, 3)))
    assert "heads=all 3" in repr(full)
