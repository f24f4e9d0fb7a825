"""A billion parameters on the CPU: headmap on a random-weight Llama 3.2 1B (its published config,
configs.py) in float32, against the plain forward of the same size in the same run.

Measurements, each in a fresh process (so peak RSS belongs to that method alone) after a 16-token
warm-up forward and, for headmap, the one-time module probe and loading the compiled statistics
kernel; the median wall time of ``--repeats`` runs (default 1: a forward at 8,192 tokens takes
minutes on two cores) and the peak RSS:

- ``plain`` at 8,192 tokens: the model's own SDPA forward without its LM head, no capture;
- ``one_head`` at 8,192: headmap, the full 8,192 x 8,192 map of one head (layer 8 of 16, head 4);
  the forward stops after that layer;
- ``plain`` at 4,096;
- ``stats`` at 4,096: headmap, every statistic of all 16 layers x 32 heads, the default fused path
  (the compiled kernel on a CPU).

Every method gets the same token ids: random words of a word-level tokenizer built in code
(configs.word_tokenizer; no Llama tokenizer can be had offline), handed to headmap as an
``Encoded``, so tokenizing is in no method's time.

Run: ``python benchmarks/billion.py`` (about 15-20 minutes on 2 idle cores; writes
benchmarks/billion.json and the billion table of benchmarks/README.md). ``--tiny`` runs the same
code on a tiny config at 256 and 128 tokens in seconds and writes into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import fresh_runs, machine_bytes, write_block
from configs import LLAMA_3_2_1B, TINY_1B, encoded_text, parameter_count, random_llama

HERE = Path(__file__).resolve().parent
#: (N, method) in the order they run; every method has the plain forward of its N beside it.
MEASUREMENTS = ((8192, "plain"), (8192, "one_head"), (4096, "plain"), (4096, "stats"))
#: The tiny run's sizes for the full run's 8,192 and 4,096.
TINY_SIZES = {8192: 256, 4096: 128}
MODEL = "llama-3.2-1b-random"
TINY = "tiny-llama-random"


def worker(tiny: bool, n: int, method: str) -> dict[str, object]:
    """One measurement in this (fresh) process."""
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    from headmap.analysis.stats import collect_stats
    from headmap.capture import capture, native
    from headmap.capture.discovery import discover, forward_module

    published = TINY_1B if tiny else LLAMA_3_2_1B
    loaded = random_llama(published, TINY if tiny else MODEL)
    enc = encoded_text(loaded.tokenizer, n)
    ids = torch.tensor([enc.ids])
    runner = forward_module(loaded.model)
    with torch.inference_mode():  # warm-up: thread pools and allocator, not measured
        runner(input_ids=ids[:, :16], use_cache=False)
    if method != "plain":
        discover(loaded.model)  # once per model and process: a setup cost, not a per-text one
        native.prepare(n)  # builds the compiled kernel (once per machine) where the text pays for it
        if native.built():
            native.module()  # loads it before the clock: a built kernel serves texts of every length
    layer, head = published["num_hidden_layers"] // 2, min(4, published["num_attention_heads"] - 1)
    notes: tuple[str, ...] = ()
    start = time.perf_counter()
    if method == "plain":
        with torch.inference_mode():
            runner(input_ids=ids, use_cache=False)
    elif method == "one_head":
        result = capture(loaded, enc, layers=[layer], heads=[head])
        assert result.layers[0].weights.shape == (1, n, n)
    elif method == "stats":
        stats = collect_stats(loaded, enc)
        assert stats.entropy.shape == (published["num_hidden_layers"], published["num_attention_heads"])
        notes = stats.notes
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": seconds, "peak_bytes": peak, "tokens": n, "notes": list(notes)}


def measure(tiny: bool, n: int, method: str, repeats: int) -> dict[str, object]:
    command = [sys.executable, __file__, "--worker", str(n), method] + (["--tiny"] if tiny else [])
    runs = fresh_runs(command, repeats, timeout=3 * 3600)
    if isinstance(runs, str):
        return {"error": runs}
    return {
        "seconds": statistics.median(r["seconds"] for r in runs),
        "peak_bytes": max(r["peak_bytes"] for r in runs),
        "tokens": runs[0]["tokens"],
        "runs": [r["seconds"] for r in runs],
        "notes": runs[0]["notes"],
    }


def table(results: dict[str, object]) -> str:
    rows = results["rows"]  # type: ignore[index]
    plain = {r["n"]: r for r in rows if r["method"] == "plain" and "seconds" in r}
    lines = [
        "| N | method | time (s) | peak RSS (GB) | time / plain | RSS / plain |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "seconds" not in r:
            lines.append(f"| {r['n']} | {r['method']} | failed: {r.get('error', '')} | | | |")
            continue
        base = plain.get(r["n"])
        ratio_t = f"{r['seconds'] / base['seconds']:.2f}x" if base else ""
        ratio_m = f"{r['peak_bytes'] / base['peak_bytes']:.2f}x" if base else ""
        lines.append(
            f"| {r['tokens']} | {r['method']} | {r['seconds']:.2f} | {r['peak_bytes'] / 1e9:.2f} | "
            f"{ratio_t} | {ratio_m} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", nargs=2, metavar=("N", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--tiny", action="store_true", help="a tiny config at 256/128 tokens, into a temp folder (seconds)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="fresh-process runs per measurement (median)")
    parser.add_argument("--out", type=Path, help="results JSON (default benchmarks/billion.json)")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the README table")
    args = parser.parse_args()
    if args.worker:
        n, method = args.worker
        print(json.dumps(worker(args.tiny, int(n), method)))
        return
    readme = HERE / "README.md"
    out = args.out or HERE / "billion.json"
    if args.tiny:
        folder = Path(tempfile.mkdtemp(prefix="headmap-billion-tiny-"))
        out = args.out or folder / "billion.json"
        readme = folder / "README.md"
        shutil.copy(HERE / "README.md", readme)
    published = TINY_1B if args.tiny else LLAMA_3_2_1B
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {machine_bytes() / 2**30:.0f} GiB, "
        f"{os.environ.get('BENCH_THREADS', '2')} torch threads",
        "model": TINY if args.tiny else MODEL,
        "parameters": parameter_count(published),
        "dtype": "float32",
        "repeats": args.repeats,
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "rows": [],
    }
    start = time.time()
    for n, method in MEASUREMENTS:
        size = TINY_SIZES[n] if args.tiny else n
        row = {"n": size, "method": method, **measure(args.tiny, size, method, args.repeats)}
        print(json.dumps(row), flush=True)
        results["rows"].append(row)  # type: ignore[attr-defined]
    results["elapsed_s"] = time.time() - start
    out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    if not args.no_readme:
        write_block(
            "billion",
            f"Machine: {results['machine']}; model {results['model']} ({results['parameters'] / 1e9:.2f} B "
            f"parameters, float32, random weights); median of {args.repeats} fresh-process run(s); "
            f"{results['when']}, whole run {results['elapsed_s'] / 60:.0f} min.\n\n{table(results)}",
            readme=readme,
        )
    print(table(results))
    print(f"billion: results in {out}" + ("" if args.no_readme else f", table in {readme}"), file=sys.stderr)


if __name__ == "__main__":
    main()
