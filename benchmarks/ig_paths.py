"""Which Integrated Gradients baseline converges? Completeness gap per baseline and step count.

For each bundled model, over the first texts of ``corpora/sentences.txt``, headmap runs IG from
each baseline (:mod:`headmap.attribution.baselines`) at exactly 50, 100, 200 and 400
Gauss-Legendre steps (no doubling) and records the relative completeness gap
``|delta| / |F(x) - F(baseline)|`` and the seconds each took. A text has converged at a step
count when the gap is at most 5% (the rule ``explain`` applies). The explained outputs are those
of benchmarks/faithfulness.py:

- ``smollm2`` (decoder): the text without its last word; the target is the first token of that word;
- ``minilm`` (encoder, no LM head): the cosine similarity with the mean-pooled next line.

Every finished (text, baseline) goes to ``--records`` (JSON lines) at once; a rerun continues.
The summary goes to ``--summary`` and a table between the ``ig_paths`` markers of
benchmarks/README.md.

Run: ``python benchmarks/ig_paths.py --limit smollm2=5`` (SmolLM2 costs ~35 s per text and
baseline on two CPU cores; MiniLM a few seconds).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from common import write_block
from faithfulness import decoder_case, load_records, read_corpus

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

import headmap  # noqa: E402
from headmap.attribution.explain import problem_for  # noqa: E402
from headmap.attribution.gradients import TOLERANCE, IntegratedGradients  # noqa: E402

STEPS = (50, 100, 200, 400)
BASELINES = {
    "smollm2": ("pad", "uniform", "pad+first", "uniform+first", "data+first", "zero+first"),
    "minilm": ("mask", "pad", "uniform", "data", "zero"),
}


def run_one(loaded, model: str, texts: list[str], index: int, baseline: str, batch: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    text = texts[index]
    if model == "minilm":
        problem = problem_for(loaded, text, compare=texts[(index + 1) % len(texts)])
    else:
        prefix, token = decoder_case(loaded, text)
        problem = problem_for(loaded, prefix, token)
    runs = {}
    for steps in STEPS:
        start = time.perf_counter()
        info = (
            IntegratedGradients(n_steps=steps, max_steps=steps, internal_batch_size=batch, baseline=baseline)
            .attribute(problem)
            .info
        )
        runs[str(steps)] = {
            "delta": info["delta"],
            "relative": info["relative_delta"],
            "seconds": time.perf_counter() - start,
        }
    return {
        "model": model,
        "index": index,
        "baseline": baseline,
        "tokens": problem.n,
        "output": info["output"],
        "baseline_output": info["baseline_output"],
        "gap": float(info["output"]) - float(info["baseline_output"]),  # type: ignore[arg-type]
        "runs": runs,
    }


def summarize(records: list[dict[str, object]]) -> list[dict[str, object]]:
    rows = []
    for model, baselines in BASELINES.items():
        for baseline in baselines:
            mine = [r for r in records if r["model"] == model and r["baseline"] == baseline]
            if not mine:
                continue
            row: dict[str, object] = {"model": model, "baseline": baseline, "texts": len(mine)}
            for steps in STEPS:
                rel = np.array([r["runs"][str(steps)]["relative"] for r in mine])  # type: ignore[index]
                row[f"median_{steps}"] = float(np.median(rel))
                row[f"max_{steps}"] = float(rel.max())
                row[f"converged_{steps}"] = float(np.mean(rel <= TOLERANCE))
                row[f"seconds_{steps}"] = float(np.mean([r["runs"][str(steps)]["seconds"] for r in mine]))  # type: ignore[index]
            row["mean_abs_gap"] = float(np.mean([abs(float(r["gap"])) for r in mine]))  # type: ignore[arg-type]
            rows.append(row)
    return rows


def table(rows: list[dict[str, object]], machine: str) -> str:
    lines = [
        f"{machine}. Relative completeness gap |delta| / |F(x) - F(baseline)| at exactly 50 / 100 / 200 / 400 "
        f"steps: median (max) over texts; converged: share of texts with gap <= {TOLERANCE:.0%}; "
        "|F(x) - F(b)|: mean over texts; s: seconds per text at 50 / 400 steps.",
        "",
        "| model | baseline | texts | gap @50 | @100 | @200 | @400 | converged @50/100/200/400 | "
        "abs F(x) - F(b) | s @50 / @400 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gaps = [f"{float(r[f'median_{s}']):.3f} ({float(r[f'max_{s}']):.2f})" for s in STEPS]  # type: ignore[arg-type]
        shares = " / ".join(f"{float(r[f'converged_{s}']):.0%}" for s in STEPS)  # type: ignore[arg-type]
        lines.append(
            f"| {r['model']} | `{r['baseline']}` | {r['texts']} | {' | '.join(gaps)} | {shares} | "
            f"{float(r['mean_abs_gap']):.3g} | {float(r['seconds_50']):.1f} / {float(r['seconds_400']):.1f} |"  # type: ignore[arg-type]
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(BASELINES))
    parser.add_argument("--texts", type=int, default=20, help="texts per model, from the start of the corpus")
    parser.add_argument(
        "--limit", action="append", default=[], metavar="MODEL=N", help="fewer texts for one model"
    )
    parser.add_argument("--baselines", default=None, help="comma-separated subset of the baselines")
    parser.add_argument("--corpus", type=Path, default=ROOT / "corpora" / "sentences.txt")
    parser.add_argument("--internal-batch-size", type=int, default=16)
    parser.add_argument("--records", type=Path, default=HERE / "ig_paths.jsonl")
    parser.add_argument("--summary", type=Path, default=HERE / "ig_paths.json")
    parser.add_argument("--no-table", action="store_true")
    args = parser.parse_args()
    from tqdm.auto import tqdm

    texts = read_corpus(args.corpus)
    records = load_records(args.records)
    done = {(r["model"], r["index"], r["baseline"]) for r in records}
    limits = {m: args.texts for m in args.models.split(",")}
    limits.update({m: int(n) for m, n in (item.split("=", 1) for item in args.limit)})
    wanted = None if args.baselines is None else set(args.baselines.split(","))
    try:
        for model in args.models.split(","):
            todo = [
                (i, b)
                for i in range(min(limits[model], len(texts)))
                for b in BASELINES[model]
                if (model, i, b) not in done and (wanted is None or b in wanted)
            ]
            if not todo:
                continue
            loaded = headmap.load(model)
            with args.records.open("a", encoding="utf-8") as sink:
                for index, baseline in tqdm(todo, desc=model, unit="run"):
                    record = run_one(loaded, model, texts, index, baseline, args.internal_batch_size)
                    sink.write(json.dumps(record) + "\n")
                    sink.flush()
                    records.append(record)
    except KeyboardInterrupt:
        print(f"interrupted: {len(records)} finished runs are kept in {args.records}", file=sys.stderr)
    chosen = [r for r in records if r["model"] in limits and int(r["index"]) < limits[r["model"]]]  # type: ignore[call-overload]
    rows = summarize(chosen)
    import torch

    machine = f"{platform.machine()}, float32, {torch.get_num_threads()} torch threads in this run (records may come from runs with other settings)"
    args.summary.write_text(
        json.dumps({"machine": machine, "steps": STEPS, "rows": rows}, indent=1), encoding="utf-8"
    )
    body = table(rows, machine)
    print(body)
    if not args.no_table:
        write_block("ig_paths", body)


if __name__ == "__main__":
    main()
