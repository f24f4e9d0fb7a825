"""The dashboard without a browser: its cache, its maps (full and streamed paths agree), its payloads."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from headmap import HeadmapError
from headmap.analysis.stats import collect_stats
from headmap.serve.cache import BoundedCache
from headmap.serve.display import ViewSpec
from headmap.serve.views import VIEWS, Request, depth, head, layer
from headmap.serve.workbench import Workbench
from headmap.view.downsample import max_pool

TEXT = "The trophy didn't fit in the suitcase because it was too big, so Maria's unbelievably tired brother left it."


def decode(payload: dict) -> list[np.ndarray]:
    """The maps a picture payload carries, as the page's script decodes them."""
    data = payload["data"]
    codes = np.frombuffer(data["codes"], dtype="<u2").astype(np.float64)
    out = []
    for i, panel in enumerate(payload["panels"]):
        n = panel["shape"][0] * panel["shape"][1]
        step = (data["hi"][i] - data["lo"][i]) / 65535
        out.append(
            (data["lo"][i] + codes[panel["start"] : panel["start"] + n] * step).reshape(panel["shape"])
        )
    return out


# -- the cache -----------------------------------------------------------------------------------
def test_cache_evicts_least_recently_used_by_bytes():
    cache: BoundedCache[bytes] = BoundedCache(10, len)
    for key in "abc":
        cache.get_or_compute(key, lambda: b"xxxx")
    assert len(cache) == 2 and "a" not in cache and cache.nbytes == 8
    cache.get_or_compute("b", lambda: b"never")  # a hit makes b the most recent
    cache.get_or_compute("d", lambda: b"yyyy")
    assert "b" in cache and "c" not in cache and cache.stats.evictions == 2
    assert cache.get_or_compute("big", lambda: b"z" * 11) == b"z" * 11 and "big" not in cache


def test_cache_computes_each_key_once_across_threads():
    cache: BoundedCache[int] = BoundedCache(1 << 20, lambda _: 1)
    calls: list[str] = []
    lock = threading.Lock()

    def slow(key: str) -> int:
        with lock:
            calls.append(key)
        time.sleep(0.2)
        return len(key)

    threads = [
        threading.Thread(target=lambda k=k: cache.get_or_compute(k, lambda: slow(k)))
        for k in ["aa", "bbb"] * 6
    ]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(calls) == ["aa", "bbb"]  # one computation per key
    assert time.perf_counter() - start < 1.0  # different keys ran side by side
    with pytest.raises(ZeroDivisionError):
        cache.get_or_compute("bad", lambda: 1 // 0)
    assert "bad" not in cache and cache.get_or_compute("bad", lambda: 7) == 7


def test_cache_put_and_get_replace_and_evict():
    cache: BoundedCache[bytes] = BoundedCache(8, len)
    cache.put("a", b"1234")
    cache.put("a", b"123456")  # replacing counts the new size only
    assert cache.get("a") == b"123456" and cache.nbytes == 6
    cache.put("b", b"12")
    cache.put("c", b"1")
    assert cache.get("a") is None and cache.get("b") == b"12" and cache.nbytes == 3


def test_picture_codes_travel_beside_the_json(minilm):
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from headmap.serve.app import blob_route
    from headmap.serve.payload import finish

    bench = Workbench(["minilm"], loader=lambda name, **_: minilm)
    payload = {"kind": "maps", "data": {"bits": 16, "lo": [0.0], "hi": [1.0], "codes": b"\x01\x00\xff\xff"}}
    inline = finish(payload, None)["data"]
    assert inline["b64"] == "AQD//w==" and "codes" not in inline and "codes" in payload["data"]
    url = finish(payload, bench.publish)["data"]["url"]
    assert url.startswith("headmap/blob/") and len(url) > len("headmap/blob/") + 20
    client = TestClient(Starlette(routes=[blob_route(bench)]))
    response = client.get("/" + url)
    assert response.status_code == 200 and response.content == b"\x01\x00\xff\xff"
    assert response.headers["cache-control"] == "no-store"
    assert client.get("/headmap/blob/not-a-token").status_code == 404
    # The same picture twice has one fingerprint (the page skips redrawing it); another colormap does not.
    again = finish(payload, bench.publish)
    assert (
        again["digest"] == finish(payload, None)["digest"] != finish({**payload, "cmap": "x"}, None)["digest"]
    )


# -- maps ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bench(minilm):
    return Workbench(["minilm"], loader=lambda name, **_: minilm, max_tokens=64)


@pytest.mark.slow
@pytest.mark.parametrize(
    "spec",
    [
        ViewSpec(),
        ViewSpec(words=True, mask_special=True, renormalize=True, norm="topk:3"),
        ViewSpec(mask_first=True, norm="log"),
    ],
)
def test_streamed_maps_equal_maps_from_a_full_capture(minilm, spec):
    """Long texts stream layer by layer; the pictures must not depend on which path made them."""
    full = Workbench(["minilm"], loader=lambda name, **_: minilm, max_cells=7)
    streamed = Workbench(["minilm"], loader=lambda name, **_: minilm, max_cells=7, full_capture_bytes=0)
    a, b = full.maps("minilm", TEXT, spec), streamed.maps("minilm", TEXT, spec)
    assert len(full.captures) == 1 and len(streamed.captures) == 0  # the streamed path kept no full capture
    result = spec.apply(full.capture("minilm", TEXT))
    for i in range(len(a.keys)):
        x, y = a.layer(i), b.layer(i)
        np.testing.assert_allclose(x.values, y.values, atol=1e-6)
        assert (x.labels(), x.notes, x.factors, x.normalization) == (
            y.labels(),
            y.notes,
            y.factors,
            y.normalization,
        )
        # ... and equal the pooled maps of headmap's own pipeline, computed here directly.
        weights = result.layers[i].weights
        fq, fk = -(-weights.shape[1] // 7), -(-weights.shape[2] // 7)
        np.testing.assert_allclose(x.values, max_pool(weights, fq, fk), atol=1e-7)
        assert x.factors == (fq, fk) and (fq > 1 and "downsampled" in x.notes[0])


@pytest.mark.slow
def test_views_send_the_maps_they_name(bench, minilm):
    request = Request("minilm", TEXT, layer=3, head=5, spec=ViewSpec(words=True), cmap="magma")
    maps = bench.maps("minilm", TEXT, ViewSpec(words=True))
    shown = head.draw(bench, request, ())
    values = maps.layer(3).values[5]
    (sent,) = decode(shown)
    step = (shown["data"]["hi"][0] - shown["data"]["lo"][0]) / 65535
    assert np.abs(sent - values).max() <= step / 2 + 1e-9
    assert shown["title"] == "minilm · layer 3 · head 5" and shown["caption"][0].startswith(
        "layer 3 · head 5 · words"
    )
    assert "not causation" in shown["caption"][-1] and shown["rows"][1] == "The [1]"
    assert shown["key"].endswith("|words|raw|layer.3|5")
    grid = layer.draw(bench, request, ())
    assert [p["title"] for p in grid["panels"]] == [f"head {h}" for h in range(12)]
    for h, sent in enumerate(decode(grid)):
        assert np.abs(sent - maps.layer(3).values[h]).max() <= 1.0 / 65535 + 1e-9
    table = depth.draw(bench, request, ("first_share",))
    expected = collect_stats(minilm, TEXT).first_share
    np.testing.assert_allclose(
        np.asarray(table["panels"][0]["values"], dtype=float).reshape(6, 12), expected, rtol=1e-7
    )
    assert table["rows"][0] == "layer 0" and table["cols"][11] == "head 11"


@pytest.mark.slow
def test_layer_view_pools_long_maps_further(minilm):
    bench = Workbench(["minilm"], loader=lambda name, **_: minilm)
    text = " ".join(["word"] * 300)
    request = Request("minilm", text, layer=1, head=0, spec=ViewSpec(), cmap="viridis")
    grid = layer.draw(bench, request, ())
    full = bench.capture("minilm", text).layers[1].weights  # 302 tokens -> 128-cell panels pool 3x3
    assert grid["panels"][0]["shape"] == [101, 101] and "downsampled 302x302 -> 101x101" in grid["caption"][1]
    assert np.abs(decode(grid)[4] - max_pool(full[4], 3, 3)).max() <= 1.0 / 65535 + 1e-7
    assert grid["rows"][0] == "[CLS]…word [0-2]"


@pytest.mark.slow
def test_bad_input_becomes_a_message(bench):
    from headmap.serve.app import Layout, Shared, draw

    counts = [len(v.controls()) for v in VIEWS]
    starts = np.cumsum([0, *counts])
    layout = Layout(VIEWS, tuple((int(a), int(a + n)) for a, n in zip(starts, counts)))
    extras = [
        "entropy",
        "",
        "",
        ["attention"],
        "a question?",
        "one chunk",
        "",
        2,
        0,
        0,
        False,
    ]  # depth, explanation, rag, generation
    base = dict(
        model="minilm",
        text=TEXT,
        layer=0,
        head=0,
        words=False,
        mask_special=False,
        mask_first=False,
        renorm=False,
        norm="raw",
        cmap="viridis",
    )

    def shown(**changes):  # type: ignore[no-untyped-def]
        return draw(bench, layout, "single head", [*Shared(**{**base, **changes}).items(), *extras])

    assert shown()["kind"] == "maps"
    cases = {
        "empty": dict(text="   "),
        "at most 64": dict(text="word " * 80),
        "layer 9 is out of range": dict(layer=9),
        "head 12 is out of range": dict(head=12),
        "unknown normalization": dict(norm="bogus"),
        "unknown colormap": dict(cmap="nope"),
        "unknown model": dict(model="gpt5"),
    }
    for needle, change in cases.items():
        payload = shown(**change)
        assert payload["kind"] == "message" and needle in payload["message"], (needle, payload)
        assert "Traceback" not in payload["message"]


def test_models_on_the_command_line_are_checked(tmp_path):
    with pytest.raises(HeadmapError, match="not a bundled model"):
        Workbench(["minilm", str(tmp_path / "missing")])
    (tmp_path / "m.gguf").write_bytes(b"")
    bench = Workbench([str(tmp_path / "m.gguf"), "minilm"], loader=lambda *a, **k: None)
    assert bench.model_names == (str(tmp_path / "m.gguf"), "minilm", "smollm2", "digits-vit")
    assert bench.default_model == str(tmp_path / "m.gguf")


def test_views_are_one_typed_list():
    labels = [v.label for v in VIEWS]
    assert labels == [
        "single head", "all heads of a layer", "over the image", "over time", "layer-depth statistics",
        "explanation", "RAG", "generation",
    ]  # fmt: skip
    assert len(set(labels)) == len(labels) and all(v.help for v in VIEWS)


def test_gradio_is_imported_with_analytics_off():
    import os

    import headmap.serve.app  # noqa: F401

    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"


def test_serve_command_help_and_bad_model(capsys, tmp_path):
    from headmap.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0 and "127.0.0.1" in capsys.readouterr().out
    assert main(["serve", "--model", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a bundled model" in err[0]


@pytest.mark.slow
def test_explanation_view_shows_explain_scores_scaled_per_method(bench, minilm):
    from headmap.attribution import explain
    from headmap.serve.views import explanation

    request = Request("minilm", TEXT, layer=0, head=0, spec=ViewSpec(), cmap="viridis")
    methods = ["attention", "rollout", "occlusion"]
    shown = explanation.draw(bench, request, ("", "A bag that is too small.", methods))
    direct = explain(minilm, TEXT, compare="A bag that is too small.", methods=methods).to_words()
    sent = np.asarray(shown["panels"][0]["values"], dtype=float).reshape(len(methods), -1)
    for i, name in enumerate(methods):
        expected = direct.scores[name] / np.nanmax(np.abs(direct.scores[name]))
        np.testing.assert_allclose(sent[i], expected, atol=1e-6)
    assert shown["rows"] == methods and shown["cols"] == list(direct.axis.tokens)
    assert any("Spearman with occlusion" in line for line in shown["caption"])
    assert "not causation" in shown["caption"][-1]


def test_rag_view_shows_the_report_of_the_same_inputs(bert_tokenizer):
    from tiny_models import build

    from headmap.apps.rag import rag
    from headmap.serve.views import rag as rag_view

    tiny, _ = build("llama", bert_tokenizer)
    bench = Workbench(["minilm"], loader=lambda name, **_: tiny)
    request = Request("minilm", "ignored", layer=0, head=0, spec=ViewSpec(), cmap="viridis")
    chunks = "the vault code is 7428 .\n\nthe garage opens at nine .\n\n\nvisitors sign in ."
    shown = rag_view.draw(bench, request, ("what is the vault code ?", chunks, "7428"))
    direct = rag(
        tiny,
        "what is the vault code ?",
        ["the vault code is 7428 .", "the garage opens at nine .", "visitors sign in ."],
        answer="7428",
    )
    sent = np.asarray(shown["panels"][0]["values"], dtype=float).reshape(len(direct.answer_tokens), 3)
    np.testing.assert_allclose(sent, direct.token_attention, atol=1e-7)
    assert shown["cols"] == ["chunk 1", "chunk 2", "chunk 3"]
    assert any(line.startswith("chunk 1: attention") for line in shown["caption"])
    payload = draw_message(bench, rag_view, ("", chunks, ""))
    assert "question is empty" in payload


def draw_message(bench, view, values) -> str:
    from headmap.errors import HeadmapError

    try:
        view.draw(bench, Request("minilm", "x", 0, 0, ViewSpec(), "viridis"), values)
    except HeadmapError as exc:
        return str(exc)
    return ""


@pytest.mark.slow
def test_generation_view_shows_each_token_beside_occlusion(smollm2):
    from headmap.attribution import explain_generation
    from headmap.serve.views import generation

    bench = Workbench(["smollm2"], loader=lambda name, **_: smollm2, max_tokens=64)
    request = Request("smollm2", "The capital of France is", layer=0, head=0, spec=ViewSpec(), cmap="viridis")
    shown = generation.draw(bench, request, (2, 0, 0, False))
    direct = explain_generation(smollm2, "The capital of France is", max_new_tokens=2).trace
    sent = np.asarray(shown["panels"][0]["values"], dtype=float).reshape(4, -1)
    np.testing.assert_allclose(sent[0], direct.attention[0] / direct.attention[0].max(), atol=1e-6)
    np.testing.assert_allclose(
        sent[1], direct.occlusion[0] / np.nanmax(np.abs(direct.occlusion[0])), atol=1e-6
    )
    assert shown["rows"][:2] == ["0: Paris · attention", "0: Paris · occlusion"]
    assert "greedy" in shown["caption"][0] and "not causation" in shown["caption"][-1]
    with pytest.raises(HeadmapError, match="1 to 32"):
        generation.draw(bench, request, (99, 0, 0, False))


def test_views_offer_the_calibrated_method_with_a_calibration(bert_tokenizer, tmp_path):
    from tiny_models import build

    from headmap.attribution import explain
    from headmap.attribution.calibrated import Calibration, model_hash
    from headmap.serve.views import explanation, rag

    tiny = build("llama", bert_tokenizer)[0]
    path = Calibration(np.full((2, 4), 0.25), {"model_hash": model_hash(tiny), "model": tiny.name}).save(
        tmp_path / "w.safetensors"
    )
    bench = Workbench(["minilm"], loader=lambda name, **_: tiny, max_tokens=64, calibrations={"minilm": path})
    request = Request("minilm", TEXT, layer=0, head=0, spec=ViewSpec(), cmap="viridis")
    shown = explanation.draw(bench, request, ("", "", ["calibrated", "occlusion"]))
    direct = explain(tiny, TEXT, methods=["calibrated", "occlusion"], calibration=path).to_words()
    sent = np.asarray(shown["panels"][0]["values"], dtype=float).reshape(2, -1)
    scores = direct.scores["calibrated"]
    np.testing.assert_allclose(sent[0], scores / np.nanmax(np.abs(scores)), atol=1e-6)
    chunks = "the old maps are kept in the library.\n\nthe garage has space for two cars.\n\nbread is baked at dawn."
    payload = rag.draw(bench, request, ("which room holds the old maps?", chunks, "the library"))
    assert any("learned head weights (AT2" in line for line in payload["caption"])
    plain = Workbench(["minilm"], loader=lambda name, **_: tiny, max_tokens=64)
    with pytest.raises(HeadmapError, match="--calibration minilm=FILE"):
        explanation.draw(plain, request, ("", "", ["calibrated"]))
