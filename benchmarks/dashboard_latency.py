"""Latency of ``headmap serve`` as a person sees it: Chromium drives the real dashboard.

Three measurements, all timed inside the page (``performance.now()``):

- **slider**: from the key press that moves the layer or head slider to the new picture on
  screen (the canvas drawn and two animation frames passed, so it was painted), at ``--sizes``
  tokens; the text is captured before timing starts, as the cache intends;
- **first map**: from the click on *Show* with a new text of ``--first-tokens`` to its first
  picture on screen (a capture, every layer, plus the drawing);
- **server share**: beside it, in this process, the server's own work for one picture (the
  cached lookup and the payload), the bytes the page receives (Gradio's JSON plus the codes it
  fetches), and drawing the same map as a PNG with matplotlib instead, the alternative design (an
  image from the server; the hover would still need the values). The PNG is timed only where the
  full capture is cached (short texts); long texts are streamed and never held whole.

Run: ``python benchmarks/dashboard_latency.py`` (SmolLM2, 256 and 2048 tokens) on a quiet
machine; it rewrites the table between the ``dashboard`` markers of benchmarks/README.md.
A smoke run: ``--sizes 64 --first-tokens 64 --moves 6 --texts 2 --no-readme``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import write_block

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TARGETS = {"slider_small": (150.0, 300.0), "slider_large": 1000.0, "first": 2000.0}
PLOT = "#hm-plot .hm-stage"
# Timing hooks installed in the page: the key press or click starts the clock, the picture's
# "headmap:drawn" event plus two animation frames (the frame that shows it) stops it.
HOOKS = """
window.__hm = {t0: null, t1: null};
document.addEventListener('keydown', () => { window.__hm.t0 = performance.now(); window.__hm.t1 = null; }, true);
document.addEventListener('click', () => { window.__hm.t0 = performance.now(); window.__hm.t1 = null; }, true);
document.addEventListener('headmap:drawn', () => {
  if (window.__hm.t0 === null) return;
  requestAnimationFrame(() => requestAnimationFrame(() => { window.__hm.t1 = performance.now(); }));
}, true);
"""


def text_of(tokenizer, n: int, seed: int) -> str:  # type: ignore[no-untyped-def]
    """About ``n`` tokens of corpus sentences, starting at a different sentence per ``seed``."""
    lines = (HERE.parent / "corpora" / "sentences.txt").read_text(encoding="utf-8").split("\n")
    lines = [line for line in lines if line.strip()]
    text, i = "", seed * 7
    while len(tokenizer(text)["input_ids"]) < n:
        text += lines[i % len(lines)] + " "
        i += 1
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    specials = len(tokenizer("a")["input_ids"]) - len(tokenizer("a", add_special_tokens=False)["input_ids"])
    return tokenizer.decode(ids[: n - specials])


def text_id(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def elapsed(page, needle: str, timeout: float) -> float:  # type: ignore[no-untyped-def]
    """Wait for a picture whose key contains ``needle`` to be painted; its latency in ms."""
    try:
        page.wait_for_function(
            "n => window.__hm.t1 !== null && (document.querySelector('#hm-plot .hm-stage').dataset.hmDrawn || '').includes(n)",
            arg=needle,
            timeout=timeout,
        )
    except Exception:
        shown = page.get_attribute(PLOT, "data-hm-drawn")
        raise RuntimeError(
            f"no picture {needle!r} (on screen: {shown!r}, timing {page.evaluate('window.__hm')})"
        ) from None
    return float(page.evaluate("window.__hm.t1 - window.__hm.t0"))


def reset(page) -> None:  # type: ignore[no-untyped-def]
    page.evaluate("window.__hm.t0 = null; window.__hm.t1 = null;")


def slider_moves(page, text: str, layers: int, heads: int, moves: int, timeout: float) -> list[float]:  # type: ignore[no-untyped-def]
    """Alternate layer and head steps, walking back and forth inside each range."""
    position = {s: int(float(page.input_value(f"#{s} input[type=number]"))) for s in ("hm-layer", "hm-head")}
    out, direction = [], {"hm-layer": 1, "hm-head": 1}
    size = {"hm-layer": layers, "hm-head": heads}
    for i in range(moves):
        slider = "hm-layer" if i % 2 == 0 else "hm-head"
        if not 0 <= position[slider] + direction[slider] < size[slider]:
            direction[slider] *= -1
        position[slider] += direction[slider]
        page.locator(f"#{slider} input[type=range]").focus()
        reset(page)
        page.keyboard.press("ArrowRight" if direction[slider] > 0 else "ArrowLeft")
        out.append(
            elapsed(
                page,
                f"{text_id(text)}|tokens|raw|layer.{position['hm-layer']}|{position['hm-head']}",
                timeout,
            )
        )
    return out


def show(page, text: str, timeout: float) -> float:  # type: ignore[no-untyped-def]
    page.fill("#hm-text textarea", text)
    reset(page)
    page.click("#hm-run")
    return elapsed(page, f"{text_id(text)}|tokens|raw|", timeout)


def server_share(bench, model: str, text: str, repeats: int) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    """Median ms of the server's work for one cached picture, its payload in KB, and a matplotlib PNG."""
    import json

    import matplotlib.pyplot as plt

    from headmap.render.report import save_figure
    from headmap.render.static import plot_head
    from headmap.serve.display import ViewSpec
    from headmap.serve.payload import finish
    from headmap.serve.views import Request, head

    request = Request(
        model, text, layer=12 % len(bench.info(model).keys), head=1, spec=ViewSpec(), cmap="viridis"
    )
    bench.maps(model, text, request.spec)  # the capture (not timed): pictures are drawn from the cache
    times, payload, codes = [], {}, 0
    for _ in range(repeats):
        start = time.perf_counter()
        drawn = head.draw(bench, request, ())
        codes = len(drawn["data"]["codes"])  # type: ignore[index]
        payload = finish(drawn, bench.publish)
        json.dumps(payload)  # gradio serializes it
        times.append(1000 * (time.perf_counter() - start))
    result = bench.capture(model, text) if (model, text) in bench.captures else None  # short texts only
    png = []
    if result is not None:
        for _ in range(min(3, repeats)):
            start = time.perf_counter()
            save_figure(
                plot_head(result, result.keys[request.layer], 1, max_tokens=512), io.BytesIO(), "png", dpi=100
            )
            png.append(1000 * (time.perf_counter() - start))
        plt.close("all")
    kb = (len(json.dumps(payload)) + codes) / 1024
    return statistics.median(times), kb, statistics.median(png) if png else float("nan")


def start_server(model: str, port: int, max_tokens: int) -> subprocess.Popen:
    """``headmap serve`` in its own process, as a person runs it: the browser driver here and the
    server do not share one interpreter (and its lock). Returns once the port answers."""
    env = {
        **os.environ,
        "PYTHONPATH": str(HERE.parent / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    command = [
        sys.executable,
        "-m",
        "headmap.cli",
        "serve",
        "--model",
        model,
        "--port",
        str(port),
        "--max-tokens",
        str(max_tokens),
    ]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"headmap serve exited: {server.stderr.read() if server.stderr else ''}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(0.5)
    server.terminate()
    raise RuntimeError("headmap serve did not start within 300 s")


def browse(
    args: argparse.Namespace, port: int, tokenizer, layers: int, heads: int
) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    rows: list[dict[str, object]] = []
    with sync_playwright() as playwright:
        # Other hosts fail to resolve inside Chromium itself: no per-request interception to slow the page.
        blocked = ARGS + ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=blocked)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.add_init_script(HOOKS)
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector(f"{PLOT}[data-hm-drawn]", timeout=args.timeout)
        show(page, text_of(tokenizer, 32, seed=99), args.timeout)  # warm-up: probe, first forward
        firsts = [
            show(page, text_of(tokenizer, args.first_tokens, seed=1 + i), args.timeout)
            for i in range(args.texts)
        ]
        rows.append(
            {
                "what": "new text -> first map",
                "tokens": args.first_tokens,
                "n": len(firsts),
                "p50": statistics.median(firsts),
                "p95": percentile(firsts, 95),
                "target": f"<= {TARGETS['first']:.0f}",
            }
        )
        for n in args.sizes:
            text = text_of(tokenizer, n, seed=50 + n)
            show(page, text, args.timeout * 10)  # the capture itself is not what is timed here
            times = slider_moves(page, text, layers, heads, args.moves, args.timeout)
            target = (
                f"p50 <= {TARGETS['slider_small'][0]:.0f}, p95 <= {TARGETS['slider_small'][1]:.0f}"
                if n <= 256
                else f"<= {TARGETS['slider_large']:.0f}"
            )
            rows.append(
                {
                    "what": "slider -> new picture",
                    "tokens": n,
                    "n": len(times),
                    "text": text,
                    "p50": statistics.median(times),
                    "p95": percentile(times, 95),
                    "target": target,
                }
            )
        browser.close()
    return rows


def run(args: argparse.Namespace) -> list[dict[str, object]]:
    from headmap.serve.workbench import Workbench

    bench = Workbench([args.model], max_tokens=max(*args.sizes, args.first_tokens) + 16)
    info = bench.info(args.model)
    port = free_port()
    server = start_server(args.model, port, bench.max_tokens)
    try:
        rows = browse(args, port, bench.model(args.model).tokenizer, len(info.keys), info.num_heads)
    finally:
        server.terminate()
        server.wait(timeout=30)
    for row in rows:
        if "text" in row:  # the server's share, measured here once the browser is done
            row["server"], row["kb"], row["png"] = server_share(
                bench, args.model, str(row.pop("text")), args.repeats
            )
        row["met"] = met(row)
    return rows


def met(row: dict[str, object]) -> str:
    p50, p95 = float(row["p50"]), float(row["p95"])  # type: ignore[arg-type]
    if row["what"].startswith("new text"):  # type: ignore[union-attr]
        return "yes" if p95 <= TARGETS["first"] else "no"
    if int(row["tokens"]) <= 256:  # type: ignore[arg-type]
        return "yes" if p50 <= TARGETS["slider_small"][0] and p95 <= TARGETS["slider_small"][1] else "no"
    return "yes" if p95 <= TARGETS["slider_large"] else "no"


def table(rows: list[dict[str, object]], model: str, load: tuple[float, float]) -> str:
    import torch

    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
        f"1-minute load average {load[0]:.1f} at the start and {load[1]:.1f} at the end; headless Chromium "
        f"({CHROMIUM}); model {model}; times in ms, measured in the page.",
        "",
        "| measurement | tokens | n | p50 (ms) | p95 (ms) | target (ms) | met | server work (ms) | received (KB) | matplotlib PNG instead (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        png = "streamed, not kept whole" if r.get("png") != r.get("png") else f"{r.get('png', 0):.0f}"  # NaN
        extra = f"{r['server']:.1f} | {r['kb']:.0f} | {png}" if "server" in r else " | | "
        lines.append(
            f"| {r['what']} | {r['tokens']} | {r['n']} | {r['p50']:.0f} | {r['p95']:.0f} | {r['target']} | "
            f"{r['met']} | {extra} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 2048], help="text lengths in tokens")
    parser.add_argument("--moves", type=int, default=40, help="slider moves timed per size")
    parser.add_argument("--texts", type=int, default=5, help="new texts timed for the first map")
    parser.add_argument("--first-tokens", type=int, default=256, help="length of those new texts")
    parser.add_argument("--repeats", type=int, default=10, help="repeats of the in-process server timing")
    parser.add_argument("--timeout", type=float, default=60_000, help="ms to wait for one picture")
    parser.add_argument("--no-readme", action="store_true", help="print the table only")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} is missing: install Debian's chromium (scripts/setup.sh does, as root)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    start = os.getloadavg()[0]
    rows = run(args)
    text = table(rows, args.model, (start, os.getloadavg()[0]))
    print(text)
    if not args.no_readme:
        write_block("dashboard", text)


if __name__ == "__main__":
    main()
