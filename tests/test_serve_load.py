"""A bounded load test of ``headmap serve``'s API: 24 clients at once, every answer checked against
the library, memory bounded, and the server still answering at the end."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client
from tiny_models import build

import headmap
from headmap.serve.workbench import Workbench

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:Warning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated:Warning"),
]
CLIENTS, CALLS = 24, 3
CACHE_BYTES = 8 << 20
#: What 72 answers may add to the process (clients included): the captures' caches are 8 MB.
RSS_GROWTH_MB = 300

SENTENCE = "the trophy did not fit in the suitcase because it was too big so maria left it at home"


def rss_mb() -> float:
    """The resident memory of this process (the server runs in it), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status on this system")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(client: int, call: int) -> dict[str, object]:
    """A different text, model, layer and head for every call of every client."""
    n = 6 + (client * CALLS + call) % 17
    vocabulary = SENTENCE.split()
    words = [vocabulary[(client + call + i) % len(vocabulary)] for i in range(n)]
    return {
        "text": " ".join(words) + f" {client}.{call}",
        "model": ("minilm", "smollm2")[(client + call) % 2],
        "layer": (client + call) % 2,
        "head": (client * 3 + call) % 4,
    }


def test_many_clients_at_once_get_correct_answers_in_bounded_memory(bert_tokenizer):
    from headmap.serve.app import launch

    tiny = {
        "minilm": build("bert", bert_tokenizer)[0],
        "smollm2": build("llama", bert_tokenizer)[0],
        "digits-vit": headmap.load("digits-vit"),
    }
    bench = Workbench(["minilm"], loader=lambda name, **_: tiny[name], cache_bytes=CACHE_BYTES)
    port = free_port()
    demo = launch(bench, port=port, block=False, quiet=True, max_concurrent=4)
    url = f"http://127.0.0.1:{port}/"
    try:
        Client(url, verbose=False).predict(text="warm up", api_name="/capture")
        before = rss_mb()
        latencies: list[float] = []
        lock = threading.Lock()

        def one_client(client: int) -> list[tuple[dict[str, object], dict[str, object]]]:
            api = Client(url, verbose=False)  # each its own session, no state shared
            answers = []
            for call in range(CALLS):
                asked = request(client, call)
                start = time.perf_counter()
                answers.append((asked, api.predict(api_name="/capture", **asked)))
                with lock:
                    latencies.append(time.perf_counter() - start)
            return answers

        started = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = [answer for answers in pool.map(one_client, range(CLIENTS)) for answer in answers]
        elapsed = time.perf_counter() - started
        grown = rss_mb() - before

        assert len(results) == CLIENTS * CALLS
        for asked, got in results:
            direct = headmap.capture(tiny[str(asked["model"])], str(asked["text"]))
            expected = direct.layers[int(asked["layer"])].weights[int(asked["head"])]  # type: ignore[call-overload]
            assert got["model"] == asked["model"] and got["head"] == asked["head"]
            np.testing.assert_allclose(np.array(got["values"]), expected, atol=1e-6)
            assert got["rows"] == list(direct.source.tokens)
        p50, p95 = np.percentile(latencies, [50, 95])
        print(
            f"{len(results)} answers in {elapsed:.1f} s: p50 {p50:.2f} s, p95 {p95:.2f} s, RSS +{grown:.0f} MB"
        )
        assert grown < RSS_GROWTH_MB, f"RSS grew by {grown:.0f} MB"
        assert bench.cached_bytes() <= CACHE_BYTES
        assert elapsed < 60
        # Still alive and answering, to a new client.
        assert Client(url, verbose=False).predict(api_name="/models")["default"] == "minilm"
    finally:
        demo.close()
