"""How faithful is each attribution picture? Rank agreement with occlusion and with IG, per method.

For each bundled model, over the first ``--texts`` lines of ``corpora/sentences.txt`` (>= 100 for
the real run), headmap explains one output per text with every method and records, at the word
level (special tokens left out), each method's Spearman correlation with occlusion (the causal
reference: the drop of the output when the word is removed) and with Integrated Gradients, and
the time each method took. The explained outputs:

- ``smollm2`` (decoder): the text without its last word; the target is the first token of that
  word (" big" for "... was too big."), i.e. the log-probability of the true continuation;
- ``minilm`` (encoder, no LM head): the cosine similarity of the mean-pooled embedding with that
  of the next line of the corpus.

The table reports per model and method the mean over texts with a 95% percentile bootstrap
interval (texts resampled, 10,000 times, fixed seed), for signed scores and for magnitudes (the
fairer comparison for attention, which has no sign), and the mean seconds per text. Texts where a
correlation is undefined (a method constant over the words) are left out of that mean.

Every finished text is appended to ``--records`` (JSON lines) at once, so an interrupted run
loses nothing and a rerun continues where it stopped. ``--table`` rewrites the table between the
markers in benchmarks/README.md from all records of the current settings.

Run: ``python benchmarks/faithfulness.py --texts 100`` (smoke: ``--texts 3 --max-steps 50``).
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

import headmap  # noqa: E402
from headmap.attribution.agreement import rank_agreement  # noqa: E402
from headmap.attribution.explain import METHODS, assemble, build_methods, problem_for  # noqa: E402
from headmap.attribution.flow import FLOW_MAX_TOKENS  # noqa: E402

MODELS = ("smollm2", "minilm")
REFERENCES = ("occlusion", "ig")


def read_corpus(path: Path) -> list[str]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def decoder_case(loaded, text: str) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    """The text without its last word, and the first token id of that word (the true continuation)."""
    cut = text.rstrip().rfind(" ")
    if cut <= 0:
        raise ValueError(f"no last word to predict in {text!r}")
    ids = loaded.tokenizer(text[cut:], add_special_tokens=False)["input_ids"]
    return text[:cut], int(ids[0])


def settings(args: argparse.Namespace) -> dict[str, object]:
    """What makes records comparable: a rerun with other settings starts afresh."""
    return {"steps": args.steps, "max_steps": args.max_steps, "corpus": args.corpus.name}


def run_text(loaded, model: str, texts: list[str], index: int, args: argparse.Namespace) -> dict[str, object]:  # type: ignore[no-untyped-def]
    text = texts[index]
    if model == "minilm":
        problem = problem_for(loaded, text, compare=texts[(index + 1) % len(texts)])
    else:
        prefix, token = decoder_case(loaded, text)
        problem = problem_for(loaded, prefix, token)
    names = [m for m in METHODS if m != "flow" or problem.n <= FLOW_MAX_TOKENS]
    methods = build_methods(
        names,
        layers=(-1,),
        heads=None,
        n_steps=args.steps,
        max_steps=args.max_steps,
        internal_batch_size=args.internal_batch_size,
        baseline="auto",
        batch_size=16,
    )
    results, seconds = [], {}
    for method in methods:
        start = time.perf_counter()
        results.append(method.attribute(problem))
        seconds[method.name] = time.perf_counter() - start
    words = assemble(problem, results).to_words()
    include = words.included
    record: dict[str, object] = {
        "model": model,
        "index": index,
        "text": problem.tokens.text,
        "tokens": problem.n,
        "words": int(include.sum()),
        "output": words.output,
        "seconds": seconds,
        **settings(args),
        "ig_run": {k: words.info["ig"][k] for k in ("steps", "delta", "converged")},
    }
    for reference in REFERENCES:
        for absolute in (False, True):
            key = f"{reference}{'_abs' if absolute else ''}"
            record[key] = {}
            ref = np.where(include, words.scores[reference], np.nan)
            for name in words.methods:
                if name == reference:
                    continue
                mine = np.where(include, words.scores[name], np.nan)
                rho = (
                    rank_agreement(np.abs(mine), np.abs(ref))[0] if absolute else rank_agreement(mine, ref)[0]
                )
                record[key][name] = None if np.isnan(rho) else rho  # type: ignore[index]
    return record


def load_records(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by an interrupted write
                continue
    return records


def bootstrap(values: list[float], resamples: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95% percentile bootstrap interval of ``values`` (texts resampled with replacement)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(data.mean()), float(low), float(high)


def summarize(records: list[dict[str, object]]) -> list[dict[str, object]]:
    rows = []
    for model in MODELS:
        mine = [r for r in records if r["model"] == model]
        if not mine:
            continue
        for method in METHODS:
            row: dict[str, object] = {"model": model, "method": method, "texts": len(mine)}
            for key in ("occlusion", "occlusion_abs", "ig", "ig_abs"):
                values = [r[key].get(method) for r in mine if method in r[key]]  # type: ignore[union-attr]
                row[key] = bootstrap([v for v in values if v is not None])
                row[f"{key}_n"] = sum(v is not None for v in values)
            times = [r["seconds"][method] for r in mine if method in r["seconds"]]  # type: ignore[index,operator]
            row["seconds"] = float(np.mean(times)) if times else float("nan")
            row["ran"] = len(times)
            if row["ran"]:
                rows.append(row)
        converged = [bool(r["ig_run"]["converged"]) for r in mine]  # type: ignore[index]
        rows.append(
            {
                "model": model,
                "method": "_ig_converged",
                "share": float(np.mean(converged)),
                "texts": len(mine),
            }
        )
    return rows


def _cell(stat: tuple[float, float, float], n: int, total: int) -> str:
    mean, low, high = stat
    if np.isnan(mean):
        return "n/a"
    note = f" ({n}/{total})" if n < total else ""
    return f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]{note}"


def table(rows: list[dict[str, object]], machine: str, wanted: dict[str, object]) -> str:
    counts = {str(r["model"]): int(r["texts"]) for r in rows}  # type: ignore[call-overload]
    label = "**Smoke run** (" if max(counts.values(), default=0) < 20 else "Run ("
    lines = [
        f"{label}texts per model: {', '.join(f'{m} {n}' for m, n in counts.items())}; IG from {wanted['steps']} steps, cap {wanted['max_steps']}; {machine}). "
        "Spearman over the words of each text, mean over texts "
        "[95% bootstrap interval]; (k/n): texts where the correlation is defined.",
        "",
        "| model | method | vs occlusion | vs occlusion, magnitudes | vs IG | vs IG, magnitudes | s / text |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["method"] == "_ig_converged":
            continue
        cells = [
            _cell(r[k], int(r[f"{k}_n"]), int(r["ran"])) if r["method"] != k.split("_")[0] else "-"  # type: ignore[arg-type]
            for k in ("occlusion", "occlusion_abs", "ig", "ig_abs")
        ]
        lines.append(f"| {r['model']} | {r['method']} | {' | '.join(cells)} | {float(r['seconds']):.2f} |")  # type: ignore[arg-type]
    converged = [f"{r['model']} {float(r['share']):.0%}" for r in rows if r["method"] == "_ig_converged"]  # type: ignore[arg-type]
    lines += ["", f"IG met the 5% completeness rule within the step cap on: {', '.join(converged)} of texts."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument(
        "--texts", type=int, default=100, help="texts per model, from the start of the corpus"
    )
    parser.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="MODEL=N",
        help="fewer texts for one model (e.g. smollm2=25, where IG costs ~30 s a text); repeatable",
    )
    parser.add_argument("--corpus", type=Path, default=ROOT / "corpora" / "sentences.txt")
    parser.add_argument("--steps", type=int, default=50, help="IG steps to start from")
    parser.add_argument(
        "--max-steps",
        type=int,
        default=200,
        help="IG step cap (steps double up to it; explain() defaults to 400)",
    )
    parser.add_argument("--internal-batch-size", type=int, default=16)
    parser.add_argument("--records", type=Path, default=HERE / "faithfulness.jsonl")
    parser.add_argument("--summary", type=Path, default=HERE / "faithfulness.json")
    parser.add_argument(
        "--no-table", action="store_true", help="do not rewrite the table in benchmarks/README.md"
    )
    args = parser.parse_args()
    from tqdm.auto import tqdm

    texts = read_corpus(args.corpus)
    wanted = settings(args)
    records = [r for r in load_records(args.records) if all(r.get(k) == v for k, v in wanted.items())]
    done = {(r["model"], r["index"]) for r in records}
    limits = {m: args.texts for m in args.models.split(",")}
    limits.update({m: int(n) for m, n in (item.split("=", 1) for item in args.limit)})
    try:
        for model in args.models.split(","):
            todo = [i for i in range(min(limits[model], len(texts))) if (model, i) not in done]
            if not todo:
                continue
            loaded = headmap.load(model)
            with args.records.open("a", encoding="utf-8") as sink:
                for index in tqdm(todo, desc=model, unit="text"):
                    record = run_text(loaded, model, texts, index, args)
                    sink.write(json.dumps(record) + "\n")
                    sink.flush()
                    records.append(record)
    except KeyboardInterrupt:
        print(f"interrupted: {len(records)} finished texts are kept in {args.records}", file=sys.stderr)
    chosen = [r for r in records if r["model"] in limits and int(r["index"]) < limits[r["model"]]]  # type: ignore[call-overload]
    rows = summarize(chosen)
    machine = f"{platform.machine()}, {__import__('os').cpu_count()} cores, torch {__import__('torch').get_num_threads()} threads"
    args.summary.write_text(
        json.dumps({"settings": wanted, "machine": machine, "rows": rows}, indent=1), encoding="utf-8"
    )
    body = table(rows, machine, wanted)
    print(body)
    if not args.no_table:
        write_block("faithfulness", body)


if __name__ == "__main__":
    main()
