"""The interactive view over an image in Chromium: hover a patch to look from it, pin it, read the
weights Python computes; selectors; the dashboard's picture; hostile unit labels stay text."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
from browser_helpers import HOSTILE, browser, save_screenshot, watch  # noqa: F401  (fixture)

import headmap
from headmap.render.embed import asset, script_json
from headmap.render.image_view import image_payload
from headmap.serve.payload import finish
from headmap.view.patches import rollout_matrix

pytestmark = pytest.mark.browser
STAGE = ".hmi-stage"
#: What the page shows is a stored value (within half a step of the true one) to 4 decimals.
TOL = 5e-5 + 1.0 / 65535  # 4 decimals shown, half a 16-bit step stored


@pytest.fixture(scope="module")
def result(digits_vit, digit_png):  # type: ignore[no-untyped-def]
    return headmap.capture(digits_vit, image=digit_png)


def drawn(page, scope: str, needle: str) -> str:  # type: ignore[no-untyped-def]
    page.wait_for_function(
        "([s, n]) => (document.querySelector(s)?.dataset.hmDrawn || '').includes(n)", arg=[scope, needle]
    )
    return page.get_attribute(scope, "data-hm-drawn")


def point(page, scope: str, cell: tuple[int, int], grid=(4, 4)) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    canvas = page.locator(f"{scope} .hmi-canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    return (
        box["x"] + (cell[1] + 0.5) * box["width"] / grid[1],
        box["y"] + (cell[0] + 0.5) * box["height"] / grid[0],
    )


def hover(page, scope: str, cell: tuple[int, int]) -> tuple[list[str], float]:  # type: ignore[no-untyped-def]
    page.mouse.move(*point(page, scope, cell))
    lines = page.locator(f"{scope} .hm-tip").inner_text().split("\n")
    match = re.search(r": (-?\d+\.\d{4})$", lines[-1])
    assert match, lines
    return lines, float(match.group(1))


def unit(cell: tuple[int, int]) -> int:
    return 1 + 4 * cell[0] + cell[1]  # CLS first, then the 4x4 grid row by row


def test_hover_chooses_the_query_and_a_click_pins_it(browser, result, tmp_path):
    path = result.render(tmp_path / "view.html", layer=2, head=1)
    watched = watch(browser.new_page(viewport={"width": 1100, "height": 900}))
    page = watched.page
    page.goto(path.as_uri())
    assert drawn(page, STAGE, "layer 2|head 1|q0").endswith("|q0")  # CLS first
    assert page.inner_text(f"{STAGE} .hmi-info").startswith("query: CLS [0]")
    head = result.layer(2).head(1).astype(np.float64)
    bars = page.locator(f"{STAGE} .hmi-bar").all_inner_texts()
    assert bars[0].split("\n")[0] == "CLS" and abs(float(bars[0].split("\n")[-1]) - head[0, 0]) <= TOL
    assert abs(float(bars[-1].split("\n")[-1]) - head[0, 1:].sum()) <= 17 * TOL
    lines, value = hover(page, STAGE, (1, 2))  # not pinned: the hovered patch becomes the query
    drawn(page, STAGE, f"layer 2|head 1|q{unit((1, 2))}")
    assert lines[:2] == ["query: p(1,2)", "key: p(1,2)"] and abs(value - head[7, 7]) <= TOL
    page.mouse.click(*point(page, STAGE, (1, 2)))
    drawn(page, STAGE, "|q7|pinned")
    for cell in [(3, 0), (0, 3), (2, 2)]:
        lines, value = hover(page, STAGE, cell)  # pinned: the hover reads the query's row
        assert lines[0] == "query: p(1,2)" and abs(value - head[7, unit(cell)]) <= TOL, (cell, lines)
    save_screenshot(page, "digits-vit-interactive.png")  # the README's picture: pinned, hovering
    page.select_option(".hmi-layer select", "0")
    page.select_option(".hmi-picture select", label="mean of 4 heads")
    drawn(page, STAGE, "layer 0|mean of 4 heads|q7|pinned")  # the pinned query stays
    mean = result.layer(0).weights.astype(np.float64).mean(0)
    assert abs(hover(page, STAGE, (3, 3))[1] - mean[7, 16]) <= TOL
    page.select_option(".hmi-picture select", label="rollout over 3 layers")
    drawn(page, STAGE, "rollout|rollout over 3 layers|q7|pinned")
    assert page.is_disabled(".hmi-layer select")
    assert abs(hover(page, STAGE, (0, 0))[1] - rollout_matrix(result)[7, 1]) <= TOL
    page.select_option(f"{STAGE} .hmi-query select", "0")  # a prefix token has no place: the select
    drawn(page, STAGE, "|q0|pinned")
    page.mouse.click(*point(page, STAGE, (0, 0)))  # a click releases the pin
    drawn(page, STAGE, "|q1")
    assert page.locator(".hmv-fallback").count() == 0  # the static picture made way
    watched.assert_clean()


def test_hostile_unit_labels_stay_text(browser, result, tmp_path):
    labels = list(result.source.tokens)
    labels[0], labels[5] = HOSTILE[0], HOSTILE[1]
    hostile = dataclasses.replace(result, source=dataclasses.replace(result.source, tokens=tuple(labels)))
    path = hostile.render(tmp_path / "hostile.html", layer=0, head=0)
    text = path.read_text(encoding="utf-8")
    assert HOSTILE[0] not in text and "<img src=x" not in text  # only escaped JSON and static picture
    watched = watch(browser.new_page())
    page = watched.page
    page.goto(path.as_uri())
    drawn(page, STAGE, "|q0")
    assert page.inner_text(f"{STAGE} .hmi-info").startswith("query: " + HOSTILE[0])
    lines, _ = hover(page, STAGE, (1, 0))
    assert lines[0] == "query: " + HOSTILE[1]
    watched.assert_clean()


def test_the_dashboards_picture_through_mount_panel(browser, result, tmp_path):
    payload = finish(image_payload(result, 1, None, query="p(2,1)"), None)  # codes inlined as base64
    page_html = (
        f"<!DOCTYPE html><html><head><style>{asset('heatmap.css')}</style></head><body>"
        "<div id='hm'><div class='hm-stage'></div></div>"
        f"<script>{asset('heatmap.js')}\n{asset('imageview.js')}\n"
        f"var props = {{value: JSON.parse({script_json(json.dumps(payload))})}};"
        "headmapView().mountPanel(document.getElementById('hm'), props, function () {});</script>"
        "</body></html>"
    )
    path = tmp_path / "panel.html"
    path.write_text(page_html, encoding="utf-8")
    watched = watch(browser.new_page())
    page = watched.page
    page.goto(path.as_uri())
    scope = "#hm .hm-stage"
    drawn(page, scope, f"|q{unit((2, 1))}")
    mean = result.layer(1).weights.astype(np.float64).mean(0)
    assert page.inner_text(f"{scope} .hm-title") == "digits-vit · layer 1 · mean of 4 heads"
    page.mouse.click(*point(page, scope, (2, 1)))
    drawn(page, scope, "|q10|pinned")
    lines, value = hover(page, scope, (0, 1))
    assert lines[:2] == ["query: p(2,1)", "key: p(0,1)"] and abs(value - mean[10, 2]) <= TOL
    watched.assert_clean()
