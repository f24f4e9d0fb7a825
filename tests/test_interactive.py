"""The interactive view's page, read back in Python: safe JSON, the stored values, sizes, pooling."""

from __future__ import annotations

import base64
import json
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import make_result, softmax_rows, tokens_from

from headmap import HeadmapError
from headmap.render.embed import Quantized, dequantize, dequantize_map, quantize, quantize_ragged, script_json
from headmap.render.interactive import AUTO_16_BITS_BYTES, interactive_html, view_payload
from headmap.result import AttentionResult, LayerKey, LayerMap, Stack

EVIL = "</script><script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"


def pieces_result(
    heads: int = 3, layers: int = 2, seed: int = 0, extra: tuple[str, ...] = ()
) -> AttentionResult:
    """[S] un beli evable cats sat (+ extra words): one word split in three pieces, a special token first."""
    words = ["unbelievable", "cats", "sat", *extra]
    text = " ".join(words)
    spans = [(0, 0), (0, 2), (2, 6), (6, 12)]
    pos = len(words[0]) + 1
    for w in words[1:]:
        spans.append((pos, pos + len(w)))
        pos += len(w) + 1
    tokens = tokens_from(text, spans, [True] + [False] * (len(spans) - 1))
    n = len(spans)
    maps = tuple(
        LayerMap(
            LayerKey(Stack.SELF, i),
            tuple(range(heads)),
            tuple(range(n)),
            softmax_rows((heads, n, n), seed=seed + i),
        )
        for i in range(layers)
    )
    return AttentionResult("pieces", tokens, maps, {Stack.SELF: layers + 1}, heads)


def embedded(page: str) -> dict:
    """The JSON a page carries for its script, parsed back."""
    match = re.search(r"<script type='application/json' class='hmv-data'>(.*?)</script>", page, re.S)
    assert match, "no embedded data"
    return json.loads(match.group(1))


def stored_maps(payload: dict) -> list[np.ndarray]:
    """Every embedded map as the page's script decodes it: inflate, codes, lo + code * step."""
    data = payload["data"]
    raw = base64.b64decode(data["b64"])
    raw = zlib.decompress(raw) if data["deflate"] else raw
    codes = np.frombuffer(raw, dtype=np.uint8 if data["bits"] == 8 else "<u2")
    quantized = Quantized(codes, np.asarray(data["lo"]), np.asarray(data["hi"]), data["bits"])
    out = []
    for layer in payload["layers"]:
        for h in range(len(layer["heads"])):
            index = layer["offset"] + h
            out.append(dequantize_map(quantized, index, payload["starts"][index], tuple(layer["shape"])))
    return out


def test_script_json_cannot_close_its_element():
    data = {"tokens": [EVIL, IMG, "a & b", "<!--", "line\u2028sep\u2029end", "]]>"]}
    text = script_json(data)
    for char in "<>&\u2028\u2029":
        assert char not in text
    assert json.loads(text) == data


@pytest.mark.parametrize("bits", [8, 16])
def test_quantization_error_is_at_most_half_a_step(bits):
    rng = np.random.default_rng(1)
    maps = np.stack(
        [
            softmax_rows((7, 9), seed=3)[None][0],
            np.log10(np.clip(softmax_rows((7, 9), seed=4), 1e-6, 1)),
            np.full((7, 9), 0.25),
        ]
    )
    q = quantize(maps, bits)
    assert q.codes.dtype == (np.uint8 if bits == 8 else np.dtype("<u2"))
    err = np.abs(dequantize(q) - maps).reshape(3, -1).max(-1)
    assert (err <= q.step / 2 + 1e-12).all()
    assert q.lo[0] == 0.0 and q.hi[0] == pytest.approx(maps[0].max())  # weights: 0 .. max
    assert q.lo[1] == pytest.approx(maps[1].min()) and q.hi[1] == 0.0  # log10 weights: min .. 0
    ragged = quantize_ragged([rng.random((2, 3)), rng.random((4, 1))], bits)
    assert ragged.codes.shape == (10,)
    with pytest.raises(HeadmapError, match="precision"):
        quantize(maps, 12)
    with pytest.raises(HeadmapError, match="NaN"):
        quantize(np.full((1, 2, 2), np.nan), bits)


def test_page_embeds_every_map_within_half_a_step():
    result = pieces_result()
    payload = embedded(interactive_html(result, precision="16"))
    assert payload["data"]["bits"] == 16
    maps = stored_maps(payload)
    truth = [layer.weights[h] for layer in result.layers for h in range(len(layer.heads))]
    steps = (np.asarray(payload["data"]["hi"]) - np.asarray(payload["data"]["lo"])) / 65535
    for stored, exact, step in zip(maps, truth, steps):
        assert np.abs(stored - exact).max() <= step / 2 + 1e-9
    words = payload["axes"][0]["words"]
    assert words["labels"] == ["[S]", "unbelievable", "cats", "sat"] and words["of"] == [0, 1, 1, 1, 2, 3]
    assert [p["spec"] for p in payload["presets"]] == [
        "raw",
        "topk:3",
        "topk:3,renorm",
        "threshold:0.05",
        "log",
    ]
    assert payload["presets"][1]["steps"] == [{"name": "topk", "k": 3}]
    assert [p["pooledOk"] for p in payload["presets"]] == [True, False, False, True, True]


def test_hostile_tokens_stay_inert_in_the_page():
    result = pieces_result(extra=(EVIL, IMG, "<b>bold</b>"))
    result = result.with_layers(result.layers, model=EVIL)
    page = interactive_html(result)
    assert page.count("<script") == page.count("</script>") == 2  # the data and the code, nothing else
    assert EVIL not in page and IMG not in page and "<b>bold" not in page
    assert re.search(r"<script[^>]*\bsrc\s*=", page, re.I) is None
    assert "http://" not in page and "https://" not in page  # nothing to fetch, no CDN
    payload = embedded(page)
    assert EVIL in payload["axes"][0]["labels"] and IMG in payload["axes"][0]["labels"]  # shown as text


def test_render_writes_the_interactive_page(tmp_path):
    result = pieces_result()
    path = result.render(tmp_path / "view.html", layer=1, head=2, interactive=True)
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "hmv-data" in page
    assert embedded(page)["start"] == {"layer": 1, "head": 2}
    with pytest.raises(HeadmapError, match=r"\.html"):
        result.render(tmp_path / "view.png", layer=1, head=0, interactive=True)
    assert "hmv-data" in result._repr_html_() and "not causation" in result._repr_html_()


def test_long_maps_are_pooled_and_the_caption_says_so():
    n = 700
    text = "x" * n
    weights = np.zeros((1, n, n), np.float32)
    weights[0, 650, 3] = 0.875  # one isolated peak must survive pooling
    result = make_result(tokens_from(text, [(i, i + 1) for i in range(n)]), weights)
    payload = view_payload(result, max_tokens=256)
    layer = payload["layers"][0]
    assert (layer["fq"], layer["fk"]) == (3, 3) and layer["shape"] == [234, 234]
    assert "downsampled 700x700 -> 234x234" in layer["notes"][0]
    assert layer["rowLabels"][216] == "x…x [648-650]"
    stored = stored_maps(payload)[0]
    assert stored[216, 1] == pytest.approx(0.875, abs=0.875 / 65535)
    assert stored.sum() == pytest.approx(stored[216, 1])


def test_precision_auto_keeps_pages_small():
    small = pieces_result()
    assert view_payload(small)["data"]["bits"] == 16
    big = pieces_result(heads=12, layers=12, extra=tuple(f"w{i}" for i in range(120)))
    payload = view_payload(big)
    assert payload["data"]["bits"] == 8
    wide = view_payload(big, precision="16")["data"]
    assert len(base64.b64decode(wide["b64"])) > AUTO_16_BITS_BYTES  # deflated: why auto chose 8
    assert len(payload["data"]["b64"]) < 0.6 * len(wide["b64"])


@pytest.mark.slow
def test_smollm2_all_heads_of_64_tokens_fit_a_few_hundred_kb(smollm2):
    from headmap import capture

    words = Path("corpora/sentences.txt").read_text(encoding="utf-8").split()
    text = " ".join(words[:40])
    while len(smollm2.tokenizer(text)["input_ids"]) < 64:
        text += " " + words[len(text.split())]
    ids = smollm2.tokenizer(text)["input_ids"]
    text = smollm2.tokenizer.decode(ids[:64])
    result = capture(smollm2, text)
    assert len(result.source) == 64 and len(result.layers) == 30 and result.num_heads == 9
    page = result._repr_html_()
    assert len(page.encode("utf-8")) < 450_000, len(page)
    payload = embedded(page)
    maps = stored_maps(payload)
    step = (np.asarray(payload["data"]["hi"]) - np.asarray(payload["data"]["lo"])) / (
        2 ** payload["data"]["bits"] - 1
    )
    worst = max(
        float(np.abs(m - layer.weights[h]).max() / s)
        for m, s, (layer, h) in zip(maps, step, [(lk, h) for lk in result.layers for h in range(9)])
    )
    assert worst <= 0.5 + 1e-6
