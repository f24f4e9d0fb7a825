"""Corpus-report throughput on Ray Data workers against the in-process path, on the same corpus.

Every measurement runs in a fresh Python process after loading the model on the driver; the clock
covers the whole ``head_report`` call, as a user of ``headmap heads`` waits for it: for Ray that
includes starting Ray on this machine, starting the actor pool and loading the model in every
worker, which is why the table also gives the time to the first finished group of texts. Engines:

- ``local``: the in-process path (``LocalEngine``), torch with ``--threads`` threads;
- ``ray1``: one Ray worker with ``--threads`` CPUs (and as many torch threads);
- ``ray2``: two Ray workers, each with ``--threads / 2`` CPUs.

The three tables are checked equal to 1e-6 before the table is written, so the run also shows that
the engines agree. Run: ``python benchmarks/ray_throughput.py`` (writes benchmarks/ray.json and the
table in benchmarks/README.md between the ray markers); ``--max-texts 32 --repeats 1`` is a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import fresh_runs, write_block

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parent / "corpora" / "sentences.txt"
ENGINES = ("local", "ray1", "ray2")


class FirstPartial:
    """An engine that passes ``inner``'s partials on and notes when the first one arrived."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner, self.first = inner, None

    def partials(self, loaded, jobs, work):  # type: ignore[no-untyped-def]
        for partial in self.inner.partials(loaded, jobs, work):
            if self.first is None:
                self.first = time.perf_counter()
            yield partial


def worker(
    model_name: str,
    engine_name: str,
    corpus: Path,
    max_texts: int | None,
    batch_size: int,
    threads: int,
    table_out: Path,
) -> dict[str, float]:
    """One measurement in this (fresh) process; the report's table goes to ``table_out`` (parquet)."""
    import torch

    torch.set_num_threads(threads)
    from headmap import head_report, load
    from headmap.analysis.corpus import read_corpus
    from headmap.analysis.engines import LocalEngine
    from headmap.analysis.ray_engine import RayEngine

    loaded = load(model_name)
    texts = [t.text for t in read_corpus(corpus, max_texts)]
    tokens = sum(len(loaded.tokenizer(t)["input_ids"]) for t in texts)
    engine = {
        "local": LocalEngine(),
        "ray1": RayEngine(workers=1, cpus_per_worker=threads),
        "ray2": RayEngine(workers=2, cpus_per_worker=max(1, threads // 2)),
    }[engine_name]
    timed = FirstPartial(engine)
    start = time.perf_counter()
    report = head_report(loaded, texts, batch_size=batch_size, engine=timed, progress=False)
    seconds = time.perf_counter() - start
    report.table.to_parquet(table_out)
    return {
        "seconds": seconds,
        "first": (timed.first or start + seconds) - start,
        "texts": len(texts),
        "tokens": tokens,
    }


def measure(engine: str, args: argparse.Namespace, folder: Path) -> dict[str, object]:
    runs = []
    for i in range(args.repeats):  # each run keeps its table, to compare the engines afterwards
        command = [
            sys.executable,
            __file__,
            "--worker",
            args.model,
            engine,
            "--corpus",
            str(args.corpus),
            "--batch-size",
            str(args.batch_size),
            "--threads",
            str(args.threads),
            "--table-out",
            str(folder / f"{engine}-{i}.parquet"),
        ]
        found = fresh_runs(command + (["--max-texts", str(args.max_texts)] if args.max_texts else []), 1)
        if isinstance(found, str):
            return {"error": found}
        runs += found
    return {
        "seconds": statistics.median(r["seconds"] for r in runs),
        "first": statistics.median(r["first"] for r in runs),
        "texts": runs[0]["texts"],
        "tokens": runs[0]["tokens"],
        "runs": [r["seconds"] for r in runs],
    }


def largest_difference(folder: Path) -> float:
    """The largest absolute difference of any numeric cell between any engine's table and local's."""
    import numpy as np
    import pandas as pd

    tables = {p.stem: pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))}
    base = tables.pop("local-0")
    numeric = base.select_dtypes("number").columns
    worst = 0.0
    for other in tables.values():
        assert list(other["role"]) == list(base["role"]), "roles differ between engines"
        worst = max(worst, float(np.nanmax(np.abs(other[numeric].to_numpy() - base[numeric].to_numpy()))))
    return worst


def table(results: dict[str, object]) -> str:
    rows = results["rows"]  # type: ignore[index]
    local = next((r for r in rows if r["engine"] == "local" and "seconds" in r), None)
    lines = [
        "| engine | workers x CPUs | texts | time (s) | first group (s) | texts/s | tokens/s | vs in-process |",
        "|---|---|---|---|---|---|---|---|",
    ]
    shape = {
        "local": "in-process",
        "ray1": f"1 x {results['threads']}",
        "ray2": f"2 x {max(1, int(results['threads']) // 2)}",
    }
    for r in rows:
        if "seconds" not in r:
            lines.append(f"| {r['engine']} | failed: {r.get('error', '')} | | | | | | |")
            continue
        speed = f"{local['seconds'] / r['seconds']:.2f}x" if local else ""
        lines.append(
            f"| {r['engine']} | {shape[r['engine']]} | {r['texts']} | {r['seconds']:.1f} | {r['first']:.1f} | "
            f"{r['texts'] / r['seconds']:.2f} | {r['tokens'] / r['seconds']:.0f} | {speed} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "ENGINE"), help=argparse.SUPPRESS)
    parser.add_argument("--table-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--max-texts", type=int, help="only the first N texts (a smoke run)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", "2")))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "ray.json")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the README table")
    args = parser.parse_args()
    if args.worker:
        model, engine = args.worker
        print(
            json.dumps(
                worker(
                    model, engine, args.corpus, args.max_texts, args.batch_size, args.threads, args.table_out
                )
            )
        )
        return
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "model": args.model,
        "threads": args.threads,
        "corpus": args.corpus.name + (f" (first {args.max_texts} texts)" if args.max_texts else ""),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as folder:
        for engine in args.engines.split(","):
            row = {"engine": engine, **measure(engine, args, Path(folder))}
            print(json.dumps(row), flush=True)
            results["rows"].append(row)  # type: ignore[attr-defined]
        results["max_abs_difference"] = largest_difference(Path(folder))
    args.out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    if not args.no_readme:
        write_block(
            "ray",
            f"Machine: {results['machine']}; model {results['model']}; corpus {results['corpus']}, "
            f"batch size {results['batch_size']}; median of {results['repeats']} fresh-process runs; "
            "largest difference of any table cell from the in-process table: "
            f"{results['max_abs_difference']:.1e}.\n\n{table(results)}",
        )
    print(table(results))


if __name__ == "__main__":
    main()
