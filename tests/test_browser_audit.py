"""An audit record's HTML in Chromium: hostile text in the input runs nothing and nothing leaves the machine."""

from __future__ import annotations

import pytest
from browser_helpers import HOSTILE, browser, watch  # noqa: F401  (fixture)
from conftest import TROPHY
from tiny_models import build

from headmap.apps.audit import audit

pytestmark = pytest.mark.browser


def test_hostile_text_in_a_record_runs_nothing(browser, bert_tokenizer, tmp_path):
    fast, _ = build("llama", bert_tokenizer)
    fast.model.save_pretrained(tmp_path / "model")
    bert_tokenizer.save_pretrained(tmp_path / "model")
    text = f"{TROPHY} {' '.join(HOSTILE)}"
    record = audit(str(tmp_path / "model"), text, methods="attention,occlusion", corpus=[*HOSTILE, TROPHY])
    path = record.save(tmp_path / "record.html")
    page = browser.new_page()
    watched = watch(page)
    page.goto(path.as_uri())
    body = page.inner_text("body")
    for hostile in HOSTILE[:3]:
        assert hostile in body  # shown as text, in the input and the JSON
    assert page.query_selector_all("img") == [] and page.query_selector_all("script") == []
    assert all(b.inner_text() != "bold" for b in page.query_selector_all("b"))  # <b>bold</b> stayed text
    assert "Summary" in body and "sha256" in body
    page.close()
    watched.assert_clean()
