"""Throughput of corpus reports (``headmap heads``) against a plain forward over the same corpus.

Every measurement runs in a fresh Python process (so peak RSS belongs to that method alone) after
loading the model, one warm-up forward and, for headmap, the one-time probe that finds the
attention modules; the table reports the median wall time of ``--repeats`` runs as texts/s and
tokens/s, the peak RSS, and both as ratios to the plain forward. Methods, all over the same texts
in batches of ``--batch-size``:

- ``plain``: the model's own SDPA forward (no LM head), under ``torch.inference_mode``: the floor;
- ``stats``: ``head_report(..., diversity=False)``: every streaming statistic of every head;
- ``report``: ``head_report(...)``: the statistics plus the head distances (all pairs of heads,
  Jensen-Shannon summed over query rows), in memory, no files;
- ``saved``: ``head_report(..., out=folder)``: the same, written as the command writes it (tables,
  partials, 13-15 PNG pictures, report.html);
- ``importance``: ``head_importance(...)``: one forward and one backward per batch with head gates
  (next-token loss for SmolLM2; for MiniLM, which has no LM head, 1 - cosine similarity of each
  text's mean-pooled embedding to the first text's).

Run: ``python benchmarks/corpus.py`` (writes benchmarks/corpus.json and the table in
benchmarks/README.md between the corpus markers). ``--max-texts 16 --repeats 1`` is a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import fresh_runs, machine_bytes, write_block

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parent / "corpora" / "sentences.txt"
METHODS = ("plain", "stats", "report", "saved", "importance")


def loss_for(loaded, anchor_text: str):  # type: ignore[no-untyped-def]
    """The model's default loss; for a sentence encoder (MiniLM, no LM head), 1 - cosine similarity of
    each text's mean-pooled embedding to the first text's (computed before the clock starts)."""
    import torch

    from headmap.analysis.losses import default_loss
    from headmap.errors import HeadmapError

    try:
        return default_loss(loaded.model)
    except HeadmapError:
        pass
    with torch.inference_mode():
        anchor = (
            loaded.model(**loaded.tokenizer(anchor_text, return_tensors="pt")).last_hidden_state[0].mean(0)
        )

    def embedding_loss(output, inputs):  # type: ignore[no-untyped-def]
        mask = inputs["attention_mask"].unsqueeze(-1).to(output.last_hidden_state.dtype)
        pooled = (output.last_hidden_state * mask).sum(1) / mask.sum(1)
        return 1 - torch.nn.functional.cosine_similarity(pooled, anchor[None].clone(), dim=-1)

    return embedding_loss


def worker(
    model_name: str, method: str, corpus: Path, max_texts: int | None, batch_size: int
) -> dict[str, float]:
    """One measurement in this (fresh) process."""
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    from headmap import head_importance, head_report, load
    from headmap.analysis.corpus import read_corpus
    from headmap.capture.discovery import discover, forward_module
    from headmap.capture.encoding import pad_batch, pad_token_id

    loaded = load(model_name)
    texts = [t.text for t in read_corpus(corpus, max_texts)]
    encoded = [loaded.tokenizer(t)["input_ids"] for t in texts]
    tokens = sum(len(ids) for ids in encoded)
    runner = forward_module(loaded.model)
    with torch.inference_mode():  # warm-up: thread pools and allocator, not measured
        runner(input_ids=torch.tensor([encoded[0]]), use_cache=False)
    if method != "plain":
        discover(loaded.model)  # once per model and process: a setup cost, not a per-text one
    start = time.perf_counter()
    if method == "plain":
        pad = pad_token_id(loaded.tokenizer)
        with torch.inference_mode():
            for first in range(0, len(encoded), batch_size):
                ids, mask, _ = pad_batch(encoded[first : first + batch_size], pad, "right")
                runner(input_ids=ids, attention_mask=mask, use_cache=False)
    elif method == "stats":
        head_report(loaded, texts, diversity=False, batch_size=batch_size)
    elif method == "report":
        head_report(loaded, texts, batch_size=batch_size)
    elif method == "saved":
        with tempfile.TemporaryDirectory() as folder:
            head_report(loaded, texts, batch_size=batch_size, out=Path(folder) / "report")
    elif method == "importance":
        head_importance(loaded, texts, batch_size=batch_size, loss=loss_for(loaded, texts[0]))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": seconds, "peak_bytes": peak, "texts": len(texts), "tokens": tokens}


def measure(model: str, method: str, args: argparse.Namespace) -> dict[str, object]:
    command = [
        sys.executable,
        __file__,
        "--worker",
        model,
        method,
        "--corpus",
        str(args.corpus),
        "--batch-size",
        str(args.batch_size),
    ] + (["--max-texts", str(args.max_texts)] if args.max_texts else [])
    runs = fresh_runs(command, args.repeats)
    if isinstance(runs, str):
        return {"error": runs}
    return {
        "seconds": statistics.median(r["seconds"] for r in runs),
        "peak_bytes": max(r["peak_bytes"] for r in runs),
        "texts": runs[0]["texts"],
        "tokens": runs[0]["tokens"],
        "runs": [r["seconds"] for r in runs],
    }


def table(results: dict[str, object]) -> str:
    rows = results["rows"]  # type: ignore[index]
    plain = {r["model"]: r for r in rows if r["method"] == "plain" and "seconds" in r}
    lines = [
        "| model | method | texts | tokens | time (s) | texts/s | tokens/s | peak RSS (GB) | time / plain | RSS / plain |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "seconds" not in r:
            lines.append(f"| {r['model']} | {r['method']} | failed: {r.get('error', '')} | | | | | | | |")
            continue
        base = plain.get(r["model"])
        ratio_t = f"{r['seconds'] / base['seconds']:.2f}x" if base else ""
        ratio_m = f"{r['peak_bytes'] / base['peak_bytes']:.2f}x" if base else ""
        lines.append(
            f"| {r['model']} | {r['method']} | {r['texts']} | {r['tokens']} | {r['seconds']:.2f} | "
            f"{r['texts'] / r['seconds']:.1f} | {r['tokens'] / r['seconds']:.0f} | "
            f"{r['peak_bytes'] / 1e9:.2f} | {ratio_t} | {ratio_m} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--models", default="smollm2,minilm")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--max-texts", type=int, help="only the first N texts (a smoke run)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "corpus.json")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the README table")
    args = parser.parse_args()
    if args.worker:
        model, method = args.worker
        print(json.dumps(worker(model, method, args.corpus, args.max_texts, args.batch_size)))
        return
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {machine_bytes() / 2**30:.0f} GiB, "
        f"{os.environ.get('BENCH_THREADS', '2')} torch threads",
        "corpus": f"{args.corpus.name}" + (f" (first {args.max_texts} texts)" if args.max_texts else ""),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "rows": [],
    }
    for model in args.models.split(","):
        for method in args.methods.split(","):
            row = {"model": model, "method": method, **measure(model, method, args)}
            print(json.dumps(row), flush=True)
            results["rows"].append(row)  # type: ignore[attr-defined]
    args.out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    if not args.no_readme:
        write_block(
            "corpus",
            f"Machine: {results['machine']}; corpus {results['corpus']}, batch size "
            f"{results['batch_size']}; median of {results['repeats']} fresh-process runs.\n\n{table(results)}",
        )
    print(table(results))


if __name__ == "__main__":
    main()
