"""The interactive notebook/standalone view in Chromium: selectors, hover values, hostile tokens, no network."""

from __future__ import annotations

import numpy as np
import pytest
from browser_helpers import HOSTILE, browser, hover_cell, save_screenshot, watch  # noqa: F401  (fixture)
from test_interactive import embedded, pieces_result, stored_maps

from headmap.result import AttentionResult, LayerMap

pytestmark = pytest.mark.browser
PRESETS = ["raw", "topk:3", "topk:3,renorm", "threshold:0.05", "log"]


def open_view(browser, path, viewport=(1000, 800)):  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    watched = watch(page)
    page.goto(path.as_uri())
    page.wait_for_selector(".hmv-stage[data-hm-drawn]")
    return watched


def stored_result(result: AttentionResult, page_html: str) -> AttentionResult:
    """``result`` with its maps replaced by the values the page stores (what its script starts from)."""
    maps = iter(stored_maps(embedded(page_html)))
    layers = [
        LayerMap(
            layer.key, layer.heads, layer.rows, np.stack([next(maps) for _ in layer.heads]).astype(np.float32)
        )
        for layer in result.layers
    ]
    return result.with_layers(layers)


def drawn(page) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """The key of the map on screen and its pixels."""
    return (
        page.get_attribute(".hmv-stage", "data-hm-drawn"),
        page.eval_on_selector(".hmv-stage .hm-canvas", "c => c.toDataURL()"),
    )


def test_selectors_change_the_map_and_hover_shows_python_values(browser, tmp_path):
    result = pieces_result(heads=3, layers=2, seed=5)
    path = result.render(tmp_path / "view.html", layer=0, head=0, interactive=True)
    stored = stored_result(result, path.read_text(encoding="utf-8"))
    watched = open_view(browser, path)
    page = watched.page
    seen = {drawn(page)}
    cases = [
        (1, 2, False, 0),
        (1, 2, True, 0),
        (0, 1, True, 1),
        (0, 1, False, 2),
        (1, 0, True, 3),
        (1, 1, False, 4),
    ]
    for layer, head, words, preset in cases:
        page.select_option(".hmv-layer select", str(layer))
        page.select_option(".hmv-head select", str(head))
        page.select_option(".hmv-norm select", str(preset))
        page.set_checked(".hmv-words input", words)
        key, pixels = drawn(page)
        unit = "word" if words else "token"
        assert key == f"layer.{layer}|{head}|{unit}|{PRESETS[preset]}"
        seen.add((key, pixels))
        view = stored.to_words() if words else stored
        view = view.normalize(PRESETS[preset])
        expected = view.layers[layer].weights[head]
        rows, cols = expected.shape
        assert int(page.get_attribute(".hm-canvas", "data-rows")) == rows
        for r in range(rows):
            for c in range(0, cols, 2 if rows > 4 else 1):
                lines, shown = hover_cell(page, ".hmv-stage", r, c)
                assert abs(shown - float(expected[r, c])) <= 5e-5 + 1e-6, (key, r, c, lines)
        caption = page.inner_text(".hmv-stage .hm-caption")
        assert f"layer {layer} · head {head} · {unit}s" in caption and "not causation" in caption
        assert "16 bits" in caption
    assert len(seen) == len(cases) + 1  # every selection drew a different map
    # The raw stored values are the true weights to within half a step.
    page.select_option(".hmv-norm select", "0")
    page.set_checked(".hmv-words input", False)
    lines, shown = hover_cell(page, ".hmv-stage", 3, 2)
    assert lines[0] == "query token: evable [3]" and lines[1] == "key token: beli [2]"
    assert abs(shown - float(result.layers[1].weights[1][3, 2])) <= 5e-5 + 1e-5
    watched.assert_clean()


def test_hostile_tokens_show_as_text_and_run_nothing(browser, tmp_path):
    result = pieces_result(extra=HOSTILE)
    result = result.with_layers(result.layers, model=HOSTILE[0])
    path = result.render(tmp_path / "evil.html", interactive=True)
    watched = open_view(browser, path)
    page = watched.page
    for words in (False, True):
        page.set_checked(".hmv-words input", words)
        ticks = page.eval_on_selector_all(".hm-rows .hm-tick", "ts => ts.map(t => t.textContent)")
        assert any(t.startswith(HOSTILE[0]) for t in ticks) and any(t.startswith(HOSTILE[1]) for t in ticks)
        assert any("x\\u2028y\\u2029z" in t for t in ticks)  # line separators made visible, not obeyed
        assert page.locator("img").count() == 0 and page.locator(".hm-rows b").count() == 0
    title = page.inner_text(".hm-title")
    assert title.startswith(HOSTILE[0])
    watched.assert_clean()


def test_pooled_maps_offer_only_presets_that_commute_with_pooling(browser, tmp_path):
    from helpers import make_result, softmax_rows, tokens_from

    n = 300
    result = make_result(
        tokens_from("y" * n, [(i, i + 1) for i in range(n)]), softmax_rows((2, n, n), seed=2)
    )
    path = result.render(tmp_path / "long.html", interactive=True, max_tokens=100)
    watched = open_view(browser, path)
    page = watched.page
    disabled = page.eval_on_selector_all(".hmv-norm option", "os => os.map(o => o.disabled)")
    assert disabled == [False, True, True, False, False]
    assert page.is_disabled(".hmv-words input")
    assert "downsampled 300x300 -> 100x100" in page.inner_text(".hm-caption")
    lines, shown = hover_cell(page, ".hmv-stage", 10, 20)
    assert lines[0] == "query token: y…y [30-32]" and lines[2].startswith("max attention weight in block")
    assert abs(shown - float(result.layers[0].weights[0][30:33, 60:63].max())) <= 5e-5 + 1e-5
    watched.assert_clean()


@pytest.mark.slow
def test_smollm2_view_and_readme_picture(browser, smollm2, tmp_path):
    from headmap import capture

    text = (
        "The trophy didn't fit in the suitcase because it was too big. "
        "Maria handed the keys to her brother before she left for the station."
    )
    result = capture(smollm2, text)
    path = result.render(tmp_path / "smollm2.html", layer=12, head=4, interactive=True)
    assert path.stat().st_size < 450_000
    watched = open_view(browser, path, viewport=(980, 900))
    page = watched.page
    assert page.get_attribute(".hmv-stage", "data-hm-drawn") == "layer.12|4|token|raw"
    page.set_checked(".hmv-words input", True)
    stored = stored_result(result, path.read_text(encoding="utf-8")).to_words()
    expected = stored.layer(12).head(4)
    for r, c in [(5, 0), (10, 9), (len(expected) - 1, 3), (16, 15)]:  # the last one stays in the picture
        _, shown = hover_cell(page, ".hmv-stage", r, c)
        assert abs(shown - float(expected[r, c])) <= 5e-5 + 1e-6
    save_screenshot(page, "notebook-view.png")
    watched.assert_clean()


def test_a_single_captured_row_stays_readable(browser, tmp_path):
    from helpers import make_result, softmax_rows, tokens_from

    n = 300
    result = make_result(
        tokens_from("z" * n, [(i, i + 1) for i in range(n)]), softmax_rows((1, 1, n), seed=4), rows=(n - 1,)
    )
    path = result.render(tmp_path / "row.html", interactive=True)
    watched = open_view(browser, path)
    page = watched.page
    canvas = page.locator(".hm-canvas").bounding_box()
    assert canvas["height"] >= 20 and canvas["width"] <= 600  # one tall row, not a 1-pixel line
    lines, shown = hover_cell(page, ".hmv-stage", 0, 123)  # 300 keys pool in pairs; the row stays whole
    assert lines[:2] == ["query token: z [299]", "key token: z…z [246-247]"]
    assert abs(shown - float(result.layers[0].weights[0, 0, 246:248].max())) <= 5e-5 + 1e-5
    caption = page.inner_text(".hm-caption")
    assert "showing 1 of 300 query rows" in caption and "downsampled 1x300 -> 1x150" in caption
    watched.assert_clean()
