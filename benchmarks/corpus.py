"""Throughput of corpus reports (``headmap heads``) against a plain forward over the same corpus.

Every measurement runs in a fresh Python process (so peak RSS belongs to that method alone) after
loading the model, one warm-up forward and, for headmap, the one-time probe that finds the
attention modules and one warm-up run of the method on two texts (imports, loading the compiled
kernel); the table reports the median wall time of ``--repeats`` runs as texts/s and
tokens/s, the peak RSS, and both as ratios to the plain forward of the same model and corpus.
Methods, all over the same texts in batches of ``--batch-size``:

- ``plain``: the model's own SDPA forward (no LM head), under ``torch.inference_mode``: the floor;
- ``stats``: ``head_report(..., diversity=False)``: every streaming statistic of every head;
- ``report``: ``head_report(...)``: the statistics plus the head distances (all pairs of heads,
  Jensen-Shannon summed over query rows), in memory, no files;
- ``saved``: ``head_report(..., out=folder)``: the same, written as the command writes it (tables,
  partials, 13-15 PNG pictures, report.html);
- ``importance``: ``head_importance(...)``: one forward and one backward per batch with head gates
  (next-token loss for SmolLM2; for MiniLM, which has no LM head, 1 - cosine similarity of each
  text's mean-pooled embedding to the first text's).

Models (``--models``): the bundled ``smollm2`` and ``minilm``, and ``gemma3-270m-random``, Gemma 3
270M's published shape with random weights (sliding-window layers, 5 sliding : 1 full; see
common.py). Corpora (``--corpora``): ``sentences`` (corpora/sentences.txt, 321 sentences),
``mixed`` (corpora/mixed.txt, 160 texts of 6-90 words), ``long`` (8 texts of ~700 tokens made of
the mixed texts, so that a 512-token window really cuts) or a path. ``--model-corpora`` gives a
model its own corpora instead: by default Gemma runs ``long`` only, since no short text reaches
its window.

Run: ``python benchmarks/corpus.py`` (writes benchmarks/corpus.json with every run and the table
in benchmarks/README.md between the corpus markers). ``--max-texts 8 --repeats 1 --no-readme`` is
a smoke run.
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

from common import (
    GEMMA_RANDOM,
    bench_texts,
    corpus_label,
    fresh_runs,
    load_bench_model,
    machine_bytes,
    write_block,
)

HERE = Path(__file__).resolve().parent
METHODS = ("plain", "stats", "report", "saved", "importance")
MODELS = ("smollm2", "minilm", GEMMA_RANDOM)
CORPORA = ("sentences", "mixed")
#: Models that run their own corpora rather than ``--corpora`` (``--model-corpora``'s default).
MODEL_CORPORA = {GEMMA_RANDOM: ("long",)}
#: Measurements left out, with the reason recorded in the results and the table.
SKIPPED = {
    (GEMMA_RANDOM, "long", "importance"): "next-token loss over a 262,144-word vocabulary needs "
    "[8, 700, 262,144] float32 logits (5.9 GB a batch) and as much again for their gradient",
}


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
    model_name: str, method: str, corpus: str, max_texts: int | None, batch_size: int
) -> dict[str, float]:
    """One measurement in this (fresh) process: ``corpus`` is a corpus name or a path."""
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    from headmap import head_importance, head_report
    from headmap.capture.discovery import discover, forward_module
    from headmap.capture.encoding import pad_batch, pad_token_id

    loaded = load_bench_model(model_name)
    texts = bench_texts(corpus, max_texts)
    encoded = [loaded.tokenizer(t)["input_ids"] for t in texts]
    tokens = sum(len(ids) for ids in encoded)
    runner = forward_module(loaded.model)
    with torch.inference_mode():  # warm-up: thread pools and allocator, not measured
        runner(input_ids=torch.tensor([encoded[0]]), use_cache=False)
    if method != "plain":
        discover(loaded.model)  # once per model and process: a setup cost, not a per-text one
    # The method once on two texts, as the plain forward warms up once: module imports (matplotlib,
    # scipy), loading the compiled kernel and first-call allocations are a process's, not a corpus's.
    if method in ("stats", "report", "saved"):
        head_report(loaded, texts[:2], diversity=method != "stats", batch_size=batch_size)
    elif method == "importance":
        head_importance(loaded, texts[:2], batch_size=batch_size, loss=loss_for(loaded, texts[0]))
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
    from headmap.capture import native

    return {
        "seconds": seconds,
        "peak_bytes": peak,
        "texts": len(texts),
        "tokens": tokens,
        # Once compiled (first built by a text of 1,024+ tokens, then kept in the user cache), the
        # kernel serves every unpadded layer call, short texts too: results depend on it being there.
        "native_kernel": native.built(),
    }


def measure(model: str, corpus: str, method: str, args: argparse.Namespace) -> dict[str, object]:
    """The median of ``--repeats`` fresh-process runs of one method, with every run kept."""
    command = [
        sys.executable,
        __file__,
        "--worker",
        model,
        method,
        "--corpus",
        corpus,
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
        "runs": runs,
    }


def parse_model_corpora(text: str) -> dict[str, tuple[str, ...]]:
    """``model=corpus+corpus,model=corpus`` -> ``{model: (corpus, ...)}``; empty: none."""
    mapping = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        model, sep, corpora = item.partition("=")
        if not sep or not corpora:
            raise SystemExit(f"--model-corpora: {item!r} is not model=corpus[+corpus...]")
        mapping[model] = tuple(corpora.split("+"))
    return mapping


def plan(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Every (model, corpus) pair to measure, in order; printed so that the mapping is never hidden."""
    if args.corpus:  # one corpus for every model, as before --corpora existed
        corpora, own = (args.corpus,), {}
    else:
        corpora, own = tuple(args.corpora.split(",")), parse_model_corpora(args.model_corpora)
    pairs = []
    for model in args.models.split(","):
        chosen = own.get(model, corpora)
        why = " (--model-corpora)" if model in own else ""
        print(f"{model}: {', '.join(corpus_label(c) for c in chosen)}{why}", file=sys.stderr)
        pairs += [(model, corpus) for corpus in chosen]
    return pairs


def per_second(rate: float) -> str:
    """A rate with one decimal, or two significant digits below 1 (long texts go at 0.05 a second)."""
    return f"{rate:.1f}" if rate >= 1 else f"{rate:.2g}"


def table(results: dict[str, object]) -> str:
    """The Markdown table of every row, each against the plain forward of its model and corpus."""
    rows = results["rows"]  # type: ignore[index]
    plain = {(r["model"], r["corpus"]): r for r in rows if r["method"] == "plain" and "seconds" in r}
    lines = [
        "| model | corpus | method | texts | tokens | time (s) | texts/s | tokens/s | peak RSS (GB) "
        "| time / plain | RSS / plain |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        head = f"| {r['model']} | {r['corpus']} | {r['method']} |"
        if "seconds" not in r:
            why = f"skipped: {r['skipped']}" if "skipped" in r else f"failed: {r.get('error', '')}"
            lines.append(f"{head} {why} | | | | | | | |")
            continue
        base = plain.get((r["model"], r["corpus"]))
        ratio_t = f"{r['seconds'] / base['seconds']:.2f}x" if base else ""
        ratio_m = f"{r['peak_bytes'] / base['peak_bytes']:.2f}x" if base else ""
        lines.append(
            f"{head} {r['texts']} | {r['tokens']} | {r['seconds']:.2f} | "
            f"{per_second(r['texts'] / r['seconds'])} | {r['tokens'] / r['seconds']:.0f} | "
            f"{r['peak_bytes'] / 1e9:.2f} | {ratio_t} | {ratio_m} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument(
        "--corpora",
        default=",".join(CORPORA),
        help="corpora for every model not in --model-corpora: sentences, mixed, long or paths",
    )
    parser.add_argument(
        "--model-corpora",
        default=",".join(f"{m}={'+'.join(c)}" for m, c in MODEL_CORPORA.items()),
        help="models that run their own corpora instead, as model=corpus[+corpus],...; '' for none",
    )
    parser.add_argument("--corpus", help="one corpus (name or path) for every model, --model-corpora ignored")
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
    pairs = plan(args)
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {machine_bytes() / 2**30:.0f} GiB, "
        f"{os.environ.get('BENCH_THREADS', '2')} torch threads",
        "texts": f"first {args.max_texts} texts of each corpus" if args.max_texts else "whole corpora",
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "plan": [{"model": m, "corpus": c} for m, c in pairs],
        "rows": [],
    }
    for model, corpus in pairs:
        for method in args.methods.split(","):
            row: dict[str, object] = {"model": model, "corpus": corpus_label(corpus), "method": method}
            skipped = SKIPPED.get((model, corpus, method))
            row.update({"skipped": skipped} if skipped else measure(model, corpus, method, args))
            print(json.dumps(row), flush=True)
            results["rows"].append(row)  # type: ignore[attr-defined]
    kernel = {run.get("native_kernel") for r in results["rows"] for run in r.get("runs", [])}  # type: ignore[attr-defined]
    results["native_kernel"] = "built" if kernel == {True} else "not built" if kernel == {False} else "mixed"
    args.out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    if not args.no_readme:
        write_block(
            "corpus",
            f"Machine: {results['machine']}; {results['texts']}, batch size {results['batch_size']}; "
            f"median of {results['repeats']} fresh-process runs; compiled statistics kernel "
            f"{results['native_kernel']}.\n\n{table(results)}",
        )
    print(table(results))


if __name__ == "__main__":
    main()
