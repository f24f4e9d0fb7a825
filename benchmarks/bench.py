"""Speed and memory of headmap against the plain forward and the eager way, side by side in one run.

Every measurement runs in a fresh Python process (so peak RSS belongs to that method alone), after
a small warm-up forward; the table reports the median wall time of ``--repeats`` runs, the peak
RSS, and both as ratios to the plain SDPA forward of the same size. Methods:

- ``plain``: the model's own SDPA forward, no capture (the floor);
- ``eager``: ``attn_implementation="eager"`` + ``output_attentions=True`` (what other tools do);
  skipped when its estimated memory exceeds this machine, with the estimate printed;
- ``stats``: headmap all-layers, all-heads streaming statistics (the table; no overview maps), fused
  kernel (the default; the compiled one for texts of 1024 tokens and more, built beforehand);
- ``stats_exact``: the same statistics with ``fused=False``: the model's SDPA kernel runs and
  headmap recomputes the weights block by block afterwards (the previous way);
- ``one_head``: headmap, one head's full map (layer 12 of SmolLM2, layer 3 of MiniLM);
- ``last_row``: headmap, every layer and head, only the last query row.

Run: ``python benchmarks/bench.py`` (writes benchmarks/results.json and the table in
benchmarks/README.md between the markers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

from common import fresh_runs, machine_bytes, write_block

HERE = Path(__file__).resolve().parent
METHODS = ("plain", "eager", "stats", "stats_exact", "one_head", "last_row")
SIZES = {"smollm2": (512, 1024, 2048, 4096, 8192), "minilm": (128, 256, 512)}
FOCUS = {"smollm2": (12, 4), "minilm": (3, 5)}
PARAGRAPH = (
    "Attention maps show where each head of a transformer looks while it reads a text. They are "
    "correlation, not causation, and long documents make them expensive to compute, which is why "
    "a careful tool streams them layer by layer and never keeps what nobody asked for. "
)


def eager_estimate(model: str, n: int) -> int:
    """Bytes the eager way holds at least: every layer's [head, N, N] float32 maps, plus scratch."""
    layers, heads = {"smollm2": (30, 9), "minilm": (6, 12)}[model]
    return layers * heads * n * n * 4 + 2 * heads * n * n * 4


def text_of(tokenizer, n: int) -> str:
    """A text that tokenizes to about ``n`` tokens, special tokens included."""
    ids = tokenizer(PARAGRAPH * (n // 20 + 4), add_special_tokens=False)["input_ids"]
    specials = len(tokenizer("a")["input_ids"]) - len(tokenizer("a", add_special_tokens=False)["input_ids"])
    return tokenizer.decode(ids[: n - specials])


def worker(model_name: str, n: int, method: str) -> dict[str, float]:
    """One measurement in this (fresh) process."""
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    from headmap.analysis.stats import collect_stats
    from headmap.capture import capture
    from headmap.capture.discovery import forward_module
    from headmap.models import load

    loaded = load(model_name)
    text = text_of(loaded.tokenizer, n)
    enc = loaded.tokenizer(text, return_tensors="pt")
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    model = forward_module(loaded.model)
    if method == "eager":
        import gc

        from transformers import AutoModel

        folder = loaded.model.name_or_path
        del model, loaded  # one copy of the weights at a time, so peak RSS compares fairly
        gc.collect()
        model = AutoModel.from_pretrained(folder, attn_implementation="eager", use_safetensors=True).eval()
    with torch.inference_mode():  # warm-up: thread pools and allocator, not measured
        model(input_ids=inputs["input_ids"][:, :16], use_cache=False)
    if method not in ("plain", "eager"):
        from headmap.capture import native
        from headmap.capture.discovery import discover

        discover(loaded.model)  # once per model and process: a setup cost, not a per-text one
        native.module()  # loads the compiled kernel (built once per machine, before any timing)
    layer, head = FOCUS[model_name]
    start = time.perf_counter()
    with torch.inference_mode():
        if method in ("plain", "eager"):
            out = model(**inputs, use_cache=False, output_attentions=method == "eager")
            if method == "eager":
                assert len(out.attentions) > 0 and out.attentions[0].shape[-1] == inputs["input_ids"].shape[1]
        elif method == "stats":
            collect_stats(loaded, text)
        elif method == "stats_exact":
            collect_stats(loaded, text, fused=False)
        elif method == "one_head":
            capture(loaded, text, layers=[layer], heads=[head])
        elif method == "last_row":
            capture(loaded, text, rows=[-1])
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": seconds, "peak_bytes": peak, "tokens": int(inputs["input_ids"].shape[1])}


def measure(model: str, n: int, method: str, repeats: int) -> dict[str, object]:
    runs = fresh_runs([sys.executable, __file__, "--worker", model, str(n), method], repeats, timeout=3600)
    if isinstance(runs, str):
        return {"error": runs}
    return {
        "seconds": statistics.median(r["seconds"] for r in runs),
        "peak_bytes": max(r["peak_bytes"] for r in runs),
        "tokens": runs[0]["tokens"],
        "runs": [r["seconds"] for r in runs],
    }


def run_all(
    models: list[str], repeats: int, sizes: dict[str, tuple[int, ...]], methods: tuple[str, ...] = METHODS
) -> dict[str, object]:
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {machine_bytes() / 2**30:.0f} GiB, "
        f"{os.environ.get('BENCH_THREADS', '2')} torch threads",
        "repeats": repeats,
        "rows": [],
    }
    budget = 0.85 * machine_bytes()
    when = time.strftime("%Y-%m-%d %H:%M")
    for model in models:
        for n in sizes[model]:
            for method in methods:
                if method == "eager" and eager_estimate(model, n) > budget:
                    est = eager_estimate(model, n) / 2**30
                    print(
                        f"{model} N={n} eager: skipped, needs ~{est:.0f} GiB > {budget / 2**30:.0f} GiB",
                        flush=True,
                    )
                    results["rows"].append(
                        {"model": model, "n": n, "method": method, "skipped": f"needs ~{est:.0f} GiB"}
                    )
                    continue
                row = {
                    "model": model,
                    "n": n,
                    "method": method,
                    "when": when,
                    **measure(model, n, method, repeats),
                }
                print(json.dumps(row), flush=True)
                results["rows"].append(row)
    return results


def merged(old: dict[str, object], new: dict[str, object]) -> dict[str, object]:
    """``old``'s rows with those measured again in ``new`` replaced, in the grid's order."""
    rows = {(r["model"], r["n"], r["method"]): r for r in old["rows"]}  # type: ignore[union-attr]
    rows.update({(r["model"], r["n"], r["method"]): r for r in new["rows"]})  # type: ignore[union-attr]
    order = {m: i for i, m in enumerate(SIZES)}
    ranked = sorted(
        rows.values(), key=lambda r: (order.get(r["model"], 99), r["n"], METHODS.index(r["method"]))
    )
    return {**new, "rows": ranked}


def table(results: dict[str, object]) -> str:
    rows = results["rows"]  # type: ignore[index]
    plain = {(r["model"], r["n"]): r for r in rows if r["method"] == "plain" and "seconds" in r}
    lines = [
        "| model | N | method | time (s) | peak RSS (GB) | time / plain | RSS / plain |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = plain.get((r["model"], r["n"]))
        if "seconds" not in r:
            why = r.get("skipped") or r.get("error", "")
            lines.append(f"| {r['model']} | {r['n']} | {r['method']} | skipped: {why} | | | |")
            continue
        ratio_t = f"{r['seconds'] / base['seconds']:.2f}x" if base else ""
        ratio_m = f"{r['peak_bytes'] / base['peak_bytes']:.2f}x" if base else ""
        lines.append(
            f"| {r['model']} | {r['tokens']} | {r['method']} | {r['seconds']:.2f} | "
            f"{r['peak_bytes'] / 1e9:.2f} | {ratio_t} | {ratio_m} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "N", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--models", default="smollm2,minilm")
    parser.add_argument("--sizes", help="comma-separated N to run for every model (default: the full grid)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods to run")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the README table")
    parser.add_argument(
        "--table-only", action="store_true", help="rewrite the README table from --out, measure nothing"
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="replace only the measured rows in --out and keep the others (run plain beside "
        "whatever you re-measure, so every ratio compares one run)",
    )
    args = parser.parse_args()
    if args.worker:
        model, n, method = args.worker
        print(json.dumps(worker(model, int(n), method)))
        return
    models = args.models.split(",")
    sizes = dict(SIZES)
    if args.sizes:
        wanted = tuple(int(s) for s in args.sizes.split(","))
        sizes = {m: tuple(n for n in wanted if n <= max(SIZES[m])) for m in models}
    if args.table_only:
        results = json.loads(args.out.read_text(encoding="utf-8"))
    else:
        results = run_all(models, args.repeats, sizes, tuple(args.methods.split(",")))
    if args.merge and args.out.exists() and not args.table_only:
        results = merged(json.loads(args.out.read_text(encoding="utf-8")), results)
    args.out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    if not args.no_readme:
        runs = sorted({str(r.get("when", "")) for r in results["rows"]} - {""})  # type: ignore[union-attr]
        when = (
            (
                f"; rows from the runs of {', '.join(runs)} (`when` in results.json); every ratio is against the plain "
                "row of its size, from the latest run that measured it"
            )
            if len(runs) > 1
            else ""
        )
        counts = sorted({len(r["runs"]) for r in results["rows"] if "runs" in r})  # type: ignore[union-attr]
        write_block(
            "table",
            f"Machine: {results['machine']}; median of {' or '.join(map(str, counts))} "
            f"fresh-process runs (the `runs` of results.json){when}.\n\n{table(results)}",
        )
    print(table(results))


if __name__ == "__main__":
    main()
