"""``headmap serve`` in Chromium with an image model and a speech model: the page shows the upload the
chosen model reads, draws what was uploaded, and refuses a clip at the wrong rate in one line."""

from __future__ import annotations

import numpy as np
import pytest
from browser_helpers import browser, hover_cell, save_screenshot, watch  # noqa: F401  (fixture)
from test_audio import tone, whisper, write_wav  # noqa: F401  (fixture)
from test_browser_dashboard import free_port, wait_drawn
from test_browser_image import TOL, hover, point, unit
from test_serve import decode

from headmap.serve.display import ViewSpec
from headmap.serve.views import Request
from headmap.serve.views import time as time_view
from headmap.serve.workbench import Workbench

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    # gradio 6.31's queue calls pandas options that pandas 3 deprecates; not ours to fix
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:Warning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated:Warning"),
]
PLOT = "#hm-plot .hm-stage"
TRANSCRIPT = "the cat sat on the mat"


@pytest.fixture(scope="module")
def server(minilm, digits_vit, whisper, tmp_path_factory):  # type: ignore[no-untyped-def]
    from headmap.serve.app import launch

    folder = tmp_path_factory.mktemp("whisper")  # a folder name offers the tiny Whisper in the list
    models = {"minilm": minilm, "digits-vit": digits_vit, str(folder): whisper[0]}
    bench = Workbench(["minilm", str(folder)], loader=lambda name, **_: models[name], max_tokens=128)
    port = free_port()
    demo = launch(bench, port=port, block=False, quiet=True)
    yield bench, f"http://127.0.0.1:{port}/", str(folder)
    demo.close()


def wait_message(page, needle: str, timeout: float = 60_000) -> str:  # type: ignore[no-untyped-def]
    page.wait_for_function(
        "n => (document.querySelector('#hm-plot .hm-stage')?.innerText || '').includes(n)",
        arg=needle,
        timeout=timeout,
    )
    return page.inner_text(PLOT)


def open_model(browser, url: str, name: str):  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    watched = watch(page)
    page.goto(url)
    wait_drawn(page, "|layer.0|0")  # the example text on minilm
    page.click("#hm-model input")
    page.get_by_role("option", name=name).click()
    return watched


def test_an_image_model_takes_an_upload_and_draws_over_it(browser, server, digit_png):
    bench, url, _ = server
    watched = open_model(browser, url, "digits-vit")
    page = watched.page
    wait_message(page, "digits-vit takes images: upload an image")
    assert page.is_visible("#hm-image") and not page.is_visible("#hm-text textarea")
    assert page.get_by_label("over the image", exact=True).is_checked()
    page.set_input_files("#hm-image input[type=file]", str(digit_png))
    wait_drawn(page, "|image|layer.0|0|q0")  # from CLS
    capture = bench.capture("digits-vit", bench.item("digits-vit", "", str(digit_png)))
    head = capture.layer(0).head(0).astype(np.float64)
    lines, value = hover(page, PLOT, (1, 2))  # the hovered patch becomes the query
    wait_drawn(page, f"|image|layer.0|0|q{unit((1, 2))}")
    assert lines[:2] == ["query: p(1,2)", "key: p(1,2)"] and abs(value - head[7, 7]) <= TOL
    page.mouse.click(*point(page, PLOT, (1, 2)))  # pinned: it stays the query as the picture changes
    page.get_by_label("rollout over all layers", exact=True).check()
    wait_drawn(page, "|image|rollout|mean|q7|pinned")
    save_screenshot(page, "dashboard-image.png")
    page.get_by_label("single head", exact=True).check()
    key = wait_drawn(page, "|tokens|raw|layer.0|0")
    assert page.inner_text(f"{PLOT} .hm-title") == "digits-vit · layer 0 · head 0"
    assert key.startswith("digits-vit|")
    expected = capture.layer(0).weights[0]
    for r, c in [(0, 0), (0, 7), (5, 16)]:
        lines, value = hover_cell(page, PLOT, r, c)
        assert abs(value - float(expected[r, c])) <= 5e-5 + 1e-6, lines
    watched.assert_clean()


def test_a_speech_model_takes_a_clip_and_its_transcript(browser, server, tmp_path):
    bench, url, folder = server
    good = write_wav(tmp_path / "tone.wav", tone(), 16000)
    fast = write_wav(tmp_path / "fast.wav", tone(rate=8000), 8000)
    watched = open_model(browser, url, folder)
    page = watched.page
    wait_message(page, "upload a WAV clip")
    assert page.is_visible("#hm-audio") and page.get_by_label("over time", exact=True).is_checked()
    page.fill("#hm-text textarea", TRANSCRIPT)
    page.set_input_files("#hm-audio input[type=file]", str(fast))
    assert "tick 'resample the clip to the model's rate'" in wait_message(page, "at 8000 Hz but")
    page.check("#hm-resample input")
    first = wait_drawn(page, "|time|ALIGNMENT")
    page.click("#hm-audio button[aria-label='Clear']")  # an uploaded clip shows a player until cleared
    wait_message(page, "upload a WAV clip")
    page.set_input_files("#hm-audio input[type=file]", str(good))
    page.wait_for_function(
        "k => { const d = document.querySelector('#hm-plot .hm-stage').dataset.hmDrawn || ''; "
        "return d.includes('|time|ALIGNMENT') && d !== k; }",
        arg=first,
        timeout=60_000,
    )
    # The clip just uploaded, resampled (a no-op at the model's rate): the same numbers as the view's.
    request = Request(folder, TRANSCRIPT, 0, 0, ViewSpec(), "viridis", audio=str(good), resample=True)
    (expected,) = decode(time_view.draw(bench, request, (time_view.Source.ALIGNMENT.value,)))
    assert "word spans along the alignment path" in page.inner_text(f"{PLOT} .hm-caption")
    lines, value = hover_cell(page, PLOT, 2, 5)
    assert lines[0].startswith("transcript token: ") and abs(value - float(expected[2, 5])) <= 5e-5, lines
    assert np.isfinite(expected).all()
    watched.assert_clean()
