"""``headmap serve`` in Chromium: a text is drawn, sliders redraw, tabs stay apart, hostile input is inert."""

from __future__ import annotations

import socket

import pytest
from browser_helpers import HOSTILE, browser, hover_cell, save_screenshot, watch  # noqa: F401  (fixture)

from headmap.analysis.stats import collect_stats
from headmap.serve.display import ViewSpec
from headmap.serve.views.common import text_id
from headmap.serve.workbench import Workbench

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    # gradio 6.31's queue calls pandas options that pandas 3 deprecates; not ours to fix
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:Warning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated:Warning"),
]
PLOT = "#hm-plot .hm-stage"
TEXT = "Maria handed the keys to her brother before she left for the station."
OTHER = "A quiet river runs under the old stone bridge near the mill."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(minilm):
    from headmap.serve.app import launch

    models = {"minilm": minilm}  # a test that switches models adds the other one (loaded by pytest)
    bench = Workbench(["minilm"], loader=lambda name, **_: models[name], max_tokens=128)
    port = free_port()
    demo = launch(bench, port=port, block=False, quiet=True)
    bench.offered = models  # type: ignore[attr-defined]
    yield bench, f"http://127.0.0.1:{port}/"
    demo.close()


def open_dashboard(browser, url: str, viewport=(1400, 1000)):  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    watched = watch(page)
    page.goto(url)
    wait_drawn(page, "|layer.0|0")  # the example text, drawn when the page loads
    return watched


def wait_drawn(page, needle: str, timeout: float = 60_000) -> str:  # type: ignore[no-untyped-def]
    """Wait until the picture on screen has ``needle`` in its key; return the key."""
    page.wait_for_function(
        "n => { const s = document.querySelector('#hm-plot .hm-stage'); return s && (s.dataset.hmDrawn || '').includes(n); }",
        arg=needle,
        timeout=timeout,
    )
    return page.get_attribute(PLOT, "data-hm-drawn")


def show(page, text: str) -> None:  # type: ignore[no-untyped-def]
    page.fill("#hm-text textarea", text)
    page.click("#hm-run")


def step_slider(page, elem_id: str, presses: int = 1) -> None:  # type: ignore[no-untyped-def]
    slider = page.locator(f"#{elem_id} input[type=range]")
    slider.focus()
    for _ in range(presses):
        page.keyboard.press("ArrowRight")


def test_text_sliders_and_hover(browser, server):
    bench, url = server
    watched = open_dashboard(browser, url)
    page = watched.page
    show(page, TEXT)
    key = wait_drawn(page, f"{text_id(TEXT)}|tokens|raw|layer.0|0")
    assert page.inner_text(f"{PLOT} .hm-caption").startswith("layer 0 · head 0 · tokens")
    step_slider(page, "hm-layer", 2)
    wait_drawn(page, f"{text_id(TEXT)}|tokens|raw|layer.2|0")
    step_slider(page, "hm-head", 3)
    wait_drawn(page, "|layer.2|3")
    assert page.inner_text(f"{PLOT} .hm-title") == "minilm · layer 2 · head 3"
    fetched = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
    assert any("/headmap/blob/" in name for name in fetched)  # the codes came beside Gradio's JSON
    expected = bench.maps("minilm", TEXT, ViewSpec()).layer(2).values[3]
    for r, c in [(0, 0), (4, 3), (9, 12), (len(expected) - 1, len(expected) - 1)]:
        lines, shown = hover_cell(page, PLOT, r, c)
        assert abs(shown - float(expected[r, c])) <= 5e-5 + 1e-6, lines
    page.check("#hm-words input")
    wait_drawn(page, "|words|raw|layer.2|3")
    words = bench.maps("minilm", TEXT, ViewSpec(words=True)).layer(2).values[3]
    lines, shown = hover_cell(page, PLOT, 4, 3)
    assert lines[0] == "query word: keys [4]" and abs(shown - float(words[4, 3])) <= 5e-5 + 1e-6
    assert key != page.get_attribute(PLOT, "data-hm-drawn")
    page.check("#hm-mask-special input")
    wait_drawn(page, "|words|hide:special|raw|layer.2|3")
    hidden = bench.maps("minilm", TEXT, ViewSpec(words=True, mask_special=True)).layer(2).values[3]
    lines, shown = hover_cell(page, PLOT, 6, 3)  # this hover stays in the README's picture
    assert lines[:2] == ["query word: brother [6]", "key word: keys [3]"]
    assert abs(shown - float(hidden[6, 3])) <= 5e-5 + 1e-6
    save_screenshot(page, "dashboard.png")
    watched.assert_clean()


def test_two_tabs_each_keep_their_own_text(browser, server):
    _, url = server
    a, b = open_dashboard(browser, url), open_dashboard(browser, url)
    show(a.page, TEXT)
    show(b.page, OTHER)
    wait_drawn(a.page, text_id(TEXT))
    wait_drawn(b.page, text_id(OTHER))
    rows_a = a.page.eval_on_selector_all(f"{PLOT} .hm-rows .hm-tick", "ts => ts.map(t => t.textContent)")
    rows_b = b.page.eval_on_selector_all(f"{PLOT} .hm-rows .hm-tick", "ts => ts.map(t => t.textContent)")
    assert "Maria [1]" in rows_a and "river [3]" in rows_b and "river [3]" not in rows_a
    # Both tabs move before either picture comes back; each still sees its own text.
    step_slider(a.page, "hm-layer", 3)
    step_slider(b.page, "hm-head", 2)
    wait_drawn(a.page, f"{text_id(TEXT)}|tokens|raw|layer.3|0")
    wait_drawn(b.page, f"{text_id(OTHER)}|tokens|raw|layer.0|2")
    a.assert_clean()
    b.assert_clean()


def test_hostile_input_runs_nothing_and_errors_show_in_the_page(browser, server):
    _, url = server
    watched = open_dashboard(browser, url)
    page = watched.page
    evil = " ".join(HOSTILE)
    show(page, evil)
    wait_drawn(page, text_id(evil))
    ticks = page.eval_on_selector_all(f"{PLOT} .hm-rows .hm-tick", "ts => ts.map(t => t.textContent)")
    assert any(t.startswith("<") for t in ticks) and page.locator("#hm-plot img").count() == 0
    lines, _ = hover_cell(page, PLOT, 2, 3)
    assert lines[0].startswith("query token: ")
    show(page, "   ")
    wait_drawn(page, "message")
    assert "the text is empty" in page.inner_text("#hm-plot .hm-message")
    show(page, "word " * 200)
    page.wait_for_function(
        "() => (document.querySelector('#hm-plot .hm-message') || {}).textContent?.includes('at most 128')"
    )
    assert "Traceback" not in page.inner_text("#hm-plot")
    watched.assert_clean()


def test_layer_and_depth_views(browser, server, minilm):
    _, url = server
    watched = open_dashboard(browser, url)
    page = watched.page
    show(page, TEXT)
    wait_drawn(page, f"{text_id(TEXT)}|tokens|raw|layer.0|0")
    page.get_by_label("all heads of a layer").check()
    wait_drawn(page, "|layer.0|all")
    assert page.locator(f"{PLOT} .hm-canvas").count() == 12
    page.get_by_label("layer-depth statistics").check()
    wait_drawn(page, "|stats|entropy")
    assert page.is_visible("#hm-stat") and page.is_disabled("#hm-layer input[type=range]")
    canvas = page.locator(f"{PLOT} .hm-canvas")
    assert (canvas.get_attribute("data-rows"), canvas.get_attribute("data-cols")) == ("6", "12")
    entropy = collect_stats(minilm, TEXT).entropy
    lines, shown = hover_cell(page, PLOT, 4, 7)
    assert (
        lines[:2] == ["layer: layer 4", "head: head 7"] and abs(shown - float(entropy[4, 7])) <= 5e-5 + 1e-6
    )
    watched.assert_clean()


def test_switching_models_resizes_the_sliders(browser, server, smollm2):
    bench, url = server
    bench.offered["smollm2"] = smollm2
    watched = open_dashboard(browser, url)
    page = watched.page
    assert page.get_attribute("#hm-layer input[type=range]", "max") == "5"
    page.click("#hm-model input")
    page.get_by_role("option", name="smollm2").click()
    wait_drawn(page, "smollm2|")
    assert page.get_attribute("#hm-layer input[type=range]", "max") == "29"
    assert page.get_attribute("#hm-head input[type=range]", "max") == "8"
    step_slider(page, "hm-layer", 2)
    wait_drawn(page, "smollm2|")
    wait_drawn(page, "|layer.2|0")
    assert page.inner_text(f"{PLOT} .hm-title") == "smollm2 · layer 2 · head 0"
    watched.assert_clean()


def test_explanation_view(browser, server):
    _, url = server
    watched = open_dashboard(browser, url)
    page = watched.page
    show(page, TEXT)
    wait_drawn(page, f"{text_id(TEXT)}|tokens|raw|layer.0|0")
    page.get_by_label("explanation", exact=True).check()
    key = wait_drawn(page, "|explain|", timeout=120_000)
    assert page.is_visible("#hm-compare") and page.is_visible("#hm-methods")
    assert "occlusion" in key
    canvas = page.locator(f"{PLOT} .hm-canvas")
    assert canvas.get_attribute("data-rows") == "5"  # the five methods ticked at first
    assert "Spearman with occlusion" in page.inner_text("#hm-plot")
    watched.assert_clean()
