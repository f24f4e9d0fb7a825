"""RAG attribution at three costs, against leave-one-out: which chunk does an answer draw on?

Prompts are built deterministically (seeded): a question about one synthetic fact ("Where is the
brass compass kept?"), 4 to 8 chunks of which one states the fact and the others state facts of the
same form about other things (hard distractors) or are sentences of corpora/sentences.txt; the
answer is given ("In the <place>.") and teacher-forced, so every method explains the same tokens.
Per prompt, headmap's ``rag`` runs with the ContextCite-style surrogate, and the methods are timed
on their own:

- ``attention``: the answer rows' attention on each chunk, mean over layers and heads (one forward);
- ``calibrated``: AT2-style learned head weights (``--calibration FILE`` from ``headmap calibrate``)
  times each chunk's per-head attention, summed over the answer rows (the same one forward);
- ``surrogate``: ``--ablations`` seeded half-ablations and a Lasso (ContextCite's recipe);
- ``leave-one-out``: each chunk removed (one forward per chunk): the reference.

Reported per model and method over the prompts: the share whose top chunk equals leave-one-out's,
the mean Spearman with leave-one-out, both with 95% bootstrap intervals (prompts resampled, seeded),
the share whose top chunk holds the fact, and the mean seconds per prompt. Records go to
``--records`` (JSON lines, appended as each prompt finishes, so an interrupted run keeps them).

Run: ``python benchmarks/rag_attribution.py --prompts 100`` (smoke: ``--prompts 3``); ``--table``
rewrites the table in benchmarks/README.md from the records.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
from common import write_block

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

ITEMS = (
    "brass compass", "spare key", "wedding album", "tax folder", "red umbrella", "chess set", "first-aid kit",
    "old violin", "garden shears", "silver teapot", "camping stove", "birth certificate", "winter coat",
    "toolbox", "globe", "sewing machine", "fishing rod", "passport", "telescope", "typewriter",
)  # fmt: skip
PLACES = (
    "attic", "basement", "garage", "hallway closet", "kitchen drawer", "guest room", "garden shed",
    "study", "pantry", "laundry room", "loft", "cellar", "porch cabinet", "bedroom wardrobe", "boathouse",
)  # fmt: skip


def prompts(n: int, seed: int = 0) -> list[dict[str, object]]:
    """``n`` prompts: ``{question, chunks, answer, needle}`` (``needle``: the fact's chunk index)."""
    rng = random.Random(seed)
    filler = [
        line.strip() for line in (ROOT / "corpora" / "sentences.txt").read_text().splitlines() if line.strip()
    ]
    out = []
    for _ in range(n):
        items = rng.sample(ITEMS, 4)
        places = rng.sample(PLACES, 4)
        n_chunks = rng.randint(4, 8)
        facts = [f"The {item} is kept in the {place}." for item, place in zip(items, places, strict=True)]
        chunks = facts[: min(3, n_chunks - 1) + 1] + rng.sample(filler, n_chunks - min(4, n_chunks))
        chunks = chunks[:n_chunks]
        rng.shuffle(chunks)
        out.append(
            {
                "question": f"Where is the {items[0]} kept?",
                "chunks": chunks,
                "answer": f"In the {places[0]}.",
                "needle": chunks.index(facts[0]),
            }
        )
    return out


def run_prompt(loaded, case: dict[str, object], ablations: int, calibration) -> dict[str, object]:  # type: ignore[no-untyped-def]
    from headmap.apps.rag import rag
    from headmap.apps.rag.causal import answer_token_logprobs, spearman
    from headmap.apps.rag.prompt import build_prompt

    question, chunks = str(case["question"]), list(case["chunks"])  # type: ignore[call-overload]
    report = rag(loaded, question, chunks, answer=str(case["answer"]), surrogate=ablations)
    answer = list(report.answer_ids)
    start = time.perf_counter()
    for slot in range(len(chunks)):  # leave-one-out, timed on its own
        reduced = build_prompt(loaded.tokenizer, question, [*chunks[:slot], *chunks[slot + 1 :]])
        answer_token_logprobs(loaded, reduced.ids, answer)
    loo_s = time.perf_counter() - start
    start = time.perf_counter()
    answer_token_logprobs(loaded, report.prompt_ids, answer)  # one forward: what attention costs
    forward_s = time.perf_counter() - start
    scores = {"attention": report.attention, "surrogate": report.surrogate.scores}
    seconds = {"attention": forward_s, "surrogate": report.surrogate.seconds, "leave-one-out": loo_s}
    if calibration is not None:
        weights = calibration.weights[: report.mass.shape[0], : report.mass.shape[1]]
        scores["calibrated"] = np.einsum("lhtc,lh->c", report.mass.astype(np.float64), weights)
        seconds["calibrated"] = forward_s
    drops = report.logprob_drop
    record: dict[str, object] = {"model": loaded.name, "chunks": len(chunks), "needle": case["needle"]}
    for name, values in scores.items():
        record[name] = {
            "top1_loo": bool(np.argmax(values) == np.argmax(drops)),
            "top1_needle": bool(np.argmax(values) == case["needle"]),
            "spearman": spearman(np.asarray(values), drops),
            "seconds": seconds[name],
        }
    record["leave-one-out"] = {"top1_needle": bool(np.argmax(drops) == case["needle"]), "seconds": loo_s}
    return record


def bootstrap(values: list[float], seed: int = 0, n: int = 10_000) -> tuple[float, float, float]:
    data = np.asarray([v for v in values if v == v], dtype=np.float64)
    if not len(data):
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(n, len(data)))].mean(1)
    return float(data.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def table(records: list[dict[str, object]]) -> str:
    lines = [
        "| model | method | prompts | top chunk = leave-one-out's | Spearman with leave-one-out | top chunk holds the fact | s / prompt |",
        "|---|---|---|---|---|---|---|",
    ]
    for model in sorted({str(r["model"]) for r in records}):
        mine = [r for r in records if r["model"] == model]
        for method in ("attention", "calibrated", "surrogate", "leave-one-out"):
            rows = [r[method] for r in mine if method in r]
            if not rows:
                continue
            needle = bootstrap([float(x["top1_needle"]) for x in rows])  # type: ignore[index]
            secs = np.mean([x["seconds"] for x in rows])  # type: ignore[index]
            if method == "leave-one-out":
                lines.append(
                    f"| {model} | {method} | {len(rows)} | (reference) | (reference) | {needle[0]:.0%} | {secs:.2f} |"
                )
                continue
            top = bootstrap([float(x["top1_loo"]) for x in rows])  # type: ignore[index]
            rho = bootstrap([float(x["spearman"]) for x in rows])  # type: ignore[index]
            lines.append(
                f"| {model} | {method} | {len(rows)} | {top[0]:.0%} [{top[1]:.0%}, {top[2]:.0%}] | "
                f"{rho[0]:+.2f} [{rho[1]:+.2f}, {rho[2]:+.2f}] | {needle[0]:.0%} | {secs:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--ablations", type=int, default=32)
    parser.add_argument(
        "--calibration", default=None, help="a headmap calibrate file for the calibrated method"
    )
    parser.add_argument("--records", default=str(HERE / "rag_attribution.jsonl"))
    parser.add_argument("--table", action="store_true", help="only rewrite the README table from the records")
    args = parser.parse_args()
    records_path = Path(args.records)
    if not args.table:
        import headmap

        loaded = headmap.load(args.model)
        calibration = None
        if args.calibration:
            from headmap.attribution.calibrated import load_calibration

            calibration = load_calibration(args.calibration, loaded)
        done = 0
        if records_path.exists():
            done = sum(
                1
                for line in records_path.read_text().splitlines()
                if json.loads(line)["model"] == loaded.name
            )
        for i, case in enumerate(prompts(args.prompts)):
            if i < done:
                continue  # finished by an earlier run
            record = run_prompt(loaded, case, args.ablations, calibration)
            with records_path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(record) + "\n")
            print(f"{i + 1}/{args.prompts}", json.dumps(record), flush=True)
    records = (
        [json.loads(line) for line in records_path.read_text().splitlines()] if records_path.exists() else []
    )
    body = (
        f"Prompts: `benchmarks/rag_attribution.py` (seeded; 4-8 chunks, one holds the fact); surrogate: "
        f"{args.ablations} ablations; 95% bootstrap intervals over prompts; machine: 2 CPU cores.\n\n"
        + table(records)
    )
    write_block("rag_attribution", body)
    print(table(records))


if __name__ == "__main__":
    main()
