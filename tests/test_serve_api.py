"""``headmap serve``'s API from a fresh client: five named endpoints, numbers equal to the library's,
one-line errors (one log line, no traceback), and a login when one is asked for."""

from __future__ import annotations

import base64
import json
import logging
import socket

import httpx
import numpy as np
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError, AuthenticationError
from tiny_models import build

import headmap
from headmap.analysis.stats import collect_stats
from headmap.apps.rag import rag
from headmap.attribution import explain
from headmap.serve.workbench import Workbench

pytestmark = [
    # gradio 6.31's queue calls pandas options that pandas 3 deprecates; not ours to fix
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:Warning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated:Warning"),
]
TEXT = "Maria handed the keys to her brother before she left for the station."
QUESTION = "what is the vault code ?"
CHUNKS = ["the vault code is 7428 .", "the garage opens at nine .", "visitors sign in ."]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def tiny(bert_tokenizer):
    """Tiny random models under the bundled names: a BERT encoder (64 positions) and a Llama decoder;
    and the shipped digits ViT, which is small already."""
    return {
        "minilm": build("bert", bert_tokenizer)[0],
        "smollm2": build("llama", bert_tokenizer)[0],
        "digits-vit": headmap.load("digits-vit"),
    }


def start(tiny, **launch_options):  # type: ignore[no-untyped-def]
    from headmap.serve.app import launch

    bench = Workbench(["minilm"], loader=lambda name, **_: tiny[name], max_text_chars=2000)
    port = free_port()
    demo = launch(bench, port=port, block=False, quiet=True, **launch_options)
    return bench, demo, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def server(tiny):
    bench, demo, url = start(tiny)
    yield bench, url
    demo.close()


def fresh(url: str, **options) -> Client:  # type: ignore[no-untyped-def]
    """A client with no history: it never called another endpoint (no /choose_model first)."""
    return Client(url, verbose=False, **options)


def test_the_api_lists_five_named_endpoints_with_named_parameters(server):
    _, url = server
    info = fresh(url).view_api(return_format="dict", print_info=False)
    assert set(info["named_endpoints"]) == {"/models", "/capture", "/stats", "/explain", "/rag"}
    assert not info["unnamed_endpoints"]  # the page's events are private
    params = [p["parameter_name"] for p in info["named_endpoints"]["/capture"]["parameters"]]
    assert params[:4] == ["text", "model", "layer", "head"] and "norm" in params and "encoding" in params
    assert [p["parameter_name"] for p in info["named_endpoints"]["/rag"]["parameters"]][:2] == [
        "question",
        "chunks",
    ]


def test_models_lists_layers_heads_and_each_model_s_own_limit(server, tiny):
    _, url = server
    found = fresh(url).predict(api_name="/models")
    assert found["default"] == "minilm"
    by_name = {m["name"]: m for m in found["models"]}
    assert by_name["minilm"]["num_heads"] == 4 and by_name["minilm"]["position_limit"] == 64
    assert by_name["minilm"]["max_tokens"] == 64 and by_name["smollm2"]["position_limit"] is None
    assert by_name["smollm2"]["layers"] == ["layer.0", "layer.1"]
    assert [by_name[n]["input"] for n in ("minilm", "smollm2", "digits-vit")] == ["text", "text", "image"]
    with pytest.raises(AppError, match="digits-vit takes images, not text"):
        fresh(url).predict(text=TEXT, model="digits-vit", layer=0, head=0, api_name="/capture")


def test_capture_from_a_fresh_client_equals_the_library(server, tiny):
    _, url = server
    # The decoder, layer 1 head 3, from a client that never chose the model: no session state.
    got = fresh(url).predict(text=TEXT, model="smollm2", layer=1, head=3, api_name="/capture")
    direct = headmap.capture(tiny["smollm2"], TEXT)
    expected = direct.layers[1].weights[3]
    assert got["shape"] == list(expected.shape) and got["dtype"] == "float32"
    np.testing.assert_allclose(np.array(got["values"]), expected, atol=1e-6)
    assert got["rows"] == list(direct.source.tokens) == got["cols"] and got["layer_name"] == "layer.1"
    assert "not causation" in got["warning"]
    # Word view, special tokens hidden with renormalized rows, top-3: the library's pipeline, base64.
    options = dict(words=True, mask_special=True, renormalize=True, norm="topk:3", encoding="base64")
    got = fresh(url).predict(text=TEXT, model="minilm", layer=-1, head=2, api_name="/capture", **options)
    result = headmap.capture(tiny["minilm"], TEXT).to_words().mask(special=True, renormalize=True)
    expected = result.normalize("topk:3").layers[-1].weights[2]
    values = np.frombuffer(base64.b64decode(got["values_base64"]), "<f4").reshape(got["shape"])
    np.testing.assert_allclose(values, expected, atol=1e-6)
    assert got["unit"] == "word" and got["layer"] == 1 and got["normalization"] == "topk:3"
    assert "keys" in got["cols"] and len(got["rows"]) == expected.shape[0]


def test_stats_explain_and_rag_equal_the_library(server, tiny):
    _, url = server
    stats = fresh(url).predict(text=TEXT, model="smollm2", api_name="/stats")
    direct = collect_stats(tiny["smollm2"], TEXT)
    entropy = np.array(
        [[r["entropy"] for r in stats["heads"] if r["layer"] == k.name] for k in direct.layers]
    )
    np.testing.assert_allclose(entropy, direct.entropy, rtol=1e-6)
    assert stats["layers"] == ["layer.0", "layer.1"] and len(stats["heads"]) == 8

    methods = ["attention", "occlusion"]
    got = fresh(url).predict(
        text=TEXT, model="minilm", compare="A bag.", methods=methods, api_name="/explain"
    )
    words = explain(tiny["minilm"], TEXT, compare="A bag.", methods=methods).to_words()
    assert got["words"] == list(words.axis.tokens) and got["methods"] == methods
    for name in methods:
        np.testing.assert_allclose(np.array(got["scores"][name], dtype=float), words.scores[name], atol=1e-6)
    assert got["agreement_with_occlusion"][0]["method"] == "attention"

    got = fresh(url).predict(
        question=QUESTION, chunks=CHUNKS, answer="7428", model="smollm2", api_name="/rag"
    )
    report = rag(tiny["smollm2"], QUESTION, CHUNKS, answer="7428")
    np.testing.assert_allclose([c["attention"] for c in got["chunks"]], report.attention, atol=1e-7)
    np.testing.assert_allclose([c["logprob_drop"] for c in got["chunks"]], report.logprob_drop, atol=1e-6)
    assert [c["text"] for c in got["chunks"]] == CHUNKS and got["answer"] == "7428"


def test_plain_http_calls_the_same_endpoint(server, tiny):
    """What curl does: POST every parameter in order, then read the event stream for the answer."""
    _, url = server
    data = [TEXT, "smollm2", 0, 1, False, False, False, False, "raw", "list"]
    with httpx.Client(base_url=url, timeout=60) as http:
        event = http.post("gradio_api/call/capture", json={"data": data}).json()["event_id"]
        stream = http.get(f"gradio_api/call/capture/{event}").text
    lines = stream.splitlines()
    data = lines[lines.index("event: complete") + 1]
    (got,) = json.loads(data.removeprefix("data: "))
    expected = headmap.capture(tiny["smollm2"], TEXT).layers[0].weights[1]
    np.testing.assert_allclose(np.array(got["values"]), expected, atol=1e-6)


def test_bad_input_is_one_line_to_the_client_and_one_in_the_log(server, caplog, capfd):
    _, url = server
    client = fresh(url)
    cases = {
        "layer 12 is out of range: valid values are 0..1": dict(text=TEXT, model="smollm2", layer=12),
        "head 4 is out of range": dict(text=TEXT, model="minilm", head=4),
        "unknown model 'gpt5'": dict(text=TEXT, model="gpt5"),
        "unknown normalization": dict(text=TEXT, norm="bogus"),
        "the text is empty": dict(text="  "),
        # The tiny encoder's own position table (64): the fix is a shorter text, not --max-tokens.
        "minilm reads at most 64 (its position limit): shorten the text": dict(text="word " * 80),
        "at most 2000: shorten it (the server's limit is --max-text-chars)": dict(text="x" * 2001),
        "&lt;b&gt;": dict(text=TEXT, model="<b>"),  # a hostile name stays text in the error
    }
    for needle, request in cases.items():
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="headmap.serve"), pytest.raises(AppError) as error:
            client.predict(api_name="/capture", **request)
        message = str(error.value)
        assert needle in message and "\n" not in message, (needle, message)
        assert "--max-tokens" not in message
        lines = [r.getMessage() for r in caplog.records if r.name == "headmap.serve"]
        assert len(lines) == 1 and lines[0].startswith("capture: bad request: "), lines
    with pytest.raises(Exception, match="chunks must be a list of strings|no chunks"):
        client.predict(question=QUESTION, chunks=[], model="smollm2", api_name="/rag")
    with pytest.raises(Exception, match="unknown methods"):
        client.predict(text=TEXT, methods=["telepathy"], api_name="/explain")
    assert "Traceback" not in "".join(capfd.readouterr())


def test_a_login_guards_the_page_and_the_api(tiny):
    _, demo, url = start(tiny, auth=[("ana", "s3cret")])
    try:
        with pytest.raises(AuthenticationError, match="Please login"):
            fresh(url)  # no login: the API's description is refused already
        got = fresh(url, auth=("ana", "s3cret")).predict(text=TEXT, model="smollm2", api_name="/capture")
        assert got["shape"][0] == got["shape"][1] > 5
        with httpx.Client(base_url=url, timeout=60) as http:
            assert http.post("gradio_api/call/models", json={"data": []}).status_code == 401
            assert http.post("login", data={"username": "ana", "password": "wrong"}).status_code >= 400
            assert http.post("login", data={"username": "ana", "password": "s3cret"}).status_code == 200
            event = http.post("gradio_api/call/models", json={"data": []}).json()["event_id"]
            assert '"default": "minilm"' in http.get(f"gradio_api/call/models/{event}").text
    finally:
        demo.close()


@pytest.mark.slow
def test_minilm_s_too_long_message_names_its_own_position_limit(minilm):
    bench = Workbench(["minilm"], loader=lambda name, **_: minilm)
    with pytest.raises(headmap.HeadmapError) as error:
        bench.count_tokens("minilm", "word " * 600)
    assert "minilm reads at most 512 (its position limit): shorten the text" in str(error.value)
    assert "--max-tokens" not in str(error.value)
    small = Workbench(["minilm"], loader=lambda name, **_: minilm, max_tokens=100)
    with pytest.raises(headmap.HeadmapError, match="larger --max-tokens"):  # here it would help
        small.count_tokens("minilm", "word " * 200)


def test_every_byte_cache_fits_in_the_budget():
    bench = Workbench(["minilm"], loader=lambda *a, **k: None, cache_bytes=80 << 20)
    caches = (bench.captures, bench.displays, bench.stats_cache, bench.blobs)
    assert sum(c.max_bytes for c in caches) == 80 << 20 and bench.cached_bytes() == 0
