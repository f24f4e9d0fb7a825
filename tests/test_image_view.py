"""The interactive image view's data: what the page and the dashboard receive equals the capture."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest

import headmap
from headmap.errors import HeadmapError
from headmap.render.embed import dequantize_map, quantize_ragged
from headmap.render.image_view import image_page, image_payload, pictures
from headmap.result import CAUSATION_WARNING
from headmap.view.patches import rollout_matrix, rollout_row


@pytest.fixture(scope="module")
def result(digits_vit, digit_png):  # type: ignore[no-untyped-def]
    return headmap.capture(digits_vit, image=digit_png)


def sent(payload: dict) -> np.ndarray:
    data, (picture,) = payload["data"], payload["pictures"]
    codes = np.frombuffer(data["codes"], dtype="<u2").astype(np.float64)
    step = (data["hi"][0] - data["lo"][0]) / 65535
    return (data["lo"][0] + codes * step).reshape(picture["shape"]), step


def embedded(page: str) -> dict:
    return json.loads(re.search(r"class='hmi-data'>(.*?)</script>", page, re.S).group(1))


def test_payload_carries_every_row_of_the_picture(result):
    head = image_payload(result, 2, 1, query="p(1,2)")
    values, step = sent(head)
    np.testing.assert_allclose(values, result.layer(2).head(1), atol=step / 2 + 1e-9)
    assert head["kind"] == "image" and head["query"] == 7 and head["pictures"][0]["rows"] == list(range(17))
    assert head["labels"][:2] == ["CLS", "p(0,0)"] and head["cells"][0] is None and head["cells"][7] == [1, 2]
    assert head["grid"] == [4, 4] and head["prefix"] == [0] and head["size"] == [8, 8]
    assert head["caption"][-1] == CAUSATION_WARNING and head["title"] == "digits-vit · layer 2 · head 1"
    mean, step = sent(image_payload(result, 0, None))
    np.testing.assert_allclose(mean, result.layer(0).weights.astype(np.float64).mean(0), atol=step / 2 + 1e-9)
    roll, step = sent(image_payload(result, None, None, rollout=True))
    np.testing.assert_allclose(roll, rollout_matrix(result), atol=step / 2 + 1e-9)
    np.testing.assert_allclose(rollout_matrix(result)[3], rollout_row(result, 3))


def test_page_embeds_every_layer_head_mean_and_rollout(result):
    page = image_page(result, layer=1, head=2)
    data = embedded(page)
    titles = [(p["layer"], p["title"]) for p in data["pictures"]]
    assert titles[:5] == [(0, "mean of 4 heads"), (0, "head 0"), (0, "head 1"), (0, "head 2"), (0, "head 3")]
    assert titles[-1] == (-1, "rollout over 3 layers") and len(titles) == 3 * 5 + 1
    assert (
        data["pictures"][data["picture"]]["title"] == "head 2"
        and data["pictures"][data["picture"]]["layer"] == 1
    )
    assert data["layers"] == ["layer 0", "layer 1", "layer 2"] and data["data"]["bits"] == 16
    found, _ = pictures(result)
    quantized = quantize_ragged([p.values for p in found], 16)
    for index, picture in enumerate(data["pictures"]):
        stored = dequantize_map(quantized, index, picture["start"], tuple(picture["shape"]))
        np.testing.assert_allclose(stored, found[index].values, atol=float(quantized.step[index]) / 2 + 1e-12)
    assert not re.search(r"(src|href)=['\"]?https?:", page) and "hmv-fallback" in page
    assert CAUSATION_WARNING in page


def test_a_large_page_keeps_the_heads_prefix_rows_and_says_so(result):
    found, notes = pictures(result, budget=2_000)
    heads = [p for p in found if p.title.startswith("head ")]
    assert all(p.rows == (0,) and p.values.shape == (1, 17) for p in heads)
    np.testing.assert_array_equal(heads[5].values[0], result.layer(1).head(1)[0])
    assert all(len(p.rows) == 17 for p in found if not p.title.startswith("head "))
    assert "each head keeps only the rows of CLS" in notes[0] and "capture fewer layers" in notes[0]


def test_hostile_labels_are_data_not_markup(result):
    labels = list(result.source.tokens)
    labels[3] = "</script><script>alert(1)</script>"
    hostile = dataclasses.replace(result, source=dataclasses.replace(result.source, tokens=tuple(labels)))
    page = image_page(hostile)
    assert "</script><script>alert(1)" not in page and embedded(page)["labels"][3] == labels[3]


def test_bad_inputs_are_refused(result, minilm):
    text = headmap.capture(minilm, "A short text.", layers=[0])
    with pytest.raises(HeadmapError, match="over text, not an image"):
        image_payload(text, 0, 0)
    partial = result.with_layers([result.layer(0)])
    with pytest.raises(HeadmapError, match="rollout needs every layer"):
        image_page(partial, rollout=True)
    with pytest.raises(HeadmapError, match="no unit"):
        image_payload(result, 0, 0, query="nope")
