"""Driving Debian's Chromium through Playwright, with every request that leaves the machine refused.

Playwright's own browser download is unavailable here, so the system Chromium is launched through
``executable_path``. Each page records the requests it tried to send anywhere but this machine
(they are aborted), the dialogs that opened (a hostile token that ran ``alert`` would open one)
and its script errors; tests assert all three stay empty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"
HOSTILE = (
    "</script><script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<b>bold</b>",
    "x\u2028y\u2029z",
)


@dataclass
class Watched:
    """A page and what it tried: requests off the machine, dialogs, script errors."""

    page: object
    blocked: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert self.blocked == [], f"requests tried to leave the machine: {self.blocked}"
        assert self.dialogs == [], f"dialogs opened (a script ran): {self.dialogs}"
        assert self.errors == [], f"script errors: {self.errors}"


def is_local(url: str) -> bool:
    scheme = urlparse(url).scheme
    return scheme in ("data", "blob", "file", "about") or urlparse(url).hostname in LOCAL_HOSTS


def watch(page) -> Watched:  # type: ignore[no-untyped-def]
    watched = Watched(page)

    def route(r) -> None:  # type: ignore[no-untyped-def]
        if is_local(r.request.url):
            r.continue_()
        else:
            watched.blocked.append(r.request.url)
            r.abort()

    def dialog(d) -> None:  # type: ignore[no-untyped-def]
        watched.dialogs.append(d.message)
        d.dismiss()

    page.route("**/*", route)
    page.on("dialog", dialog)
    page.on("pageerror", lambda e: watched.errors.append(str(e)))
    return watched


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium per test module (one Playwright at a time: each module that imports this
    fixture gets its own copy of it); skipped, with the reason, where it cannot run."""
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"{CHROMIUM} is missing: scripts/setup.sh installs it as root with `apt-get install -y chromium`"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (requirements.txt)"
    )
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield instance
        instance.close()


def hover_cell(page, scope: str, row: int, col: int, panel: int = 0) -> tuple[list[str], float]:  # type: ignore[no-untyped-def]
    """Hover the centre of cell (row, col) of a panel's canvas; the tooltip's lines and the value shown."""
    wrap = page.locator(f"{scope} .hm-panel").nth(panel)
    canvas = wrap.locator(".hm-canvas")
    canvas.scroll_into_view_if_needed()  # a control clicked lower in the page may have scrolled it away
    box = canvas.bounding_box()
    rows, cols = int(canvas.get_attribute("data-rows")), int(canvas.get_attribute("data-cols"))
    page.mouse.move(
        box["x"] + (col + 0.5) * box["width"] / cols, box["y"] + (row + 0.5) * box["height"] / rows
    )
    lines = wrap.locator(".hm-tip").inner_text().split("\n")
    match = re.search(r": (-?\d+\.\d{4})$", lines[-1])
    assert match, lines
    return lines, float(match.group(1))


def save_screenshot(page, name: str) -> Path:  # type: ignore[no-untyped-def]
    """A README picture, taken from the real page."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    path = IMAGES / name
    page.screenshot(path=str(path), full_page=True)
    return path
