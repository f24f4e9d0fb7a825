"""RAG attribution at three costs, against leave-one-out: which chunk does an answer draw on?

Prompts are built deterministically (seeded): a question about one synthetic fact ("Where is the
brass compass kept?"), 4 to 8 chunks of which one states the fact and the others state facts of the
same form about other things (hard distractors) or are sentences of corpora/sentences.txt; the
answer is given ("In the <place>.") and teacher-forced, so every method explains the same tokens.
Per prompt, headmap's ``rag`` runs with the ContextCite-style surrogate, and the methods are timed
on their own:

- ``attention``: the answer rows' attention on each chunk, mean over layers and heads (one forward);
- ``calibrated``: AT2-style head weights learned on RAG chunks (``calibrate_rag``, i.e. ``headmap
  calibrate --rag``) on ``--train`` training prompts built with another seed than the test prompts,
  ``--train-ablations`` chunk ablations each, times each chunk's per-head attention summed over the
  answer rows (one streamed capture of the answer rows, timed on its own). The weights are saved to
  ``benchmarks/rag_calibration_<model>.safetensors`` and reused while their settings and training
  prompts match (``--calibration FILE`` uses a given file instead);
- ``surrogate``: ``--ablations`` seeded half-ablations and a Lasso (ContextCite's recipe);
- ``leave-one-out``: each chunk removed (one forward per chunk): the reference.

Reported per model and method over the prompts: the share whose top chunk equals leave-one-out's,
the mean Spearman with leave-one-out, both with 95% bootstrap intervals (prompts resampled, seeded),
the share whose top chunk holds the fact, and the mean seconds per prompt; beside them the
calibration's own held-out scores and the time ratio calibrated / surrogate. Records go to
``--records`` (JSON lines, appended as each prompt finishes, so an interrupted run keeps them).

Run: ``python benchmarks/rag_attribution.py --prompts 100`` (smoke: ``--prompts 3 --train 4``); ``--table``
rewrites the table in benchmarks/README.md from the records. ``--model smollm2,minilm`` runs several
models; one that ``rag`` refuses (an encoder without an LM head, such as minilm) is skipped with the reason.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

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


#: The test prompts' seed, and the training prompts' (another, so that no prompt is both).
TEST_SEED, TRAIN_SEED = 0, 1
KEEP, HOLDOUT, ALPHA, CAL_SEED = 0.5, 0.2, 0.0, 0


def prompts(n: int, seed: int = TEST_SEED) -> list[dict[str, object]]:
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
    from headmap.apps.rag.features import answer_evidence, chunk_features
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
        start = time.perf_counter()  # what the calibrated method costs on its own: one streamed capture
        prompt = build_prompt(loaded.tokenizer, question, chunks)
        features = chunk_features(answer_evidence(loaded, prompt, answer).mass)
        scores["calibrated"] = calibration.predict(features)
        seconds["calibrated"] = time.perf_counter() - start
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


def calibration_path(model: str) -> Path:
    """Where a model's learned RAG head weights are cached."""
    return HERE / f"rag_calibration_{model.replace('/', '_')}.safetensors"


def calibrated(loaded, n: int, ablations: int):  # type: ignore[no-untyped-def]
    """The model's head weights learned by ``calibrate_rag`` on ``n`` training prompts (seed
    ``TRAIN_SEED``): the cached file when its model, settings and training prompts match, else fitted
    and saved (``meta["benchmark"]`` adds the fit's seconds)."""
    from headmap.apps.rag.calibrate import as_example, calibrate_rag
    from headmap.attribution.calibrate import corpus_hash
    from headmap.attribution.calibrated import load_calibration, model_hash

    train = prompts(n, TRAIN_SEED)
    want = {"ablations": ablations, "keep": KEEP, "holdout": HOLDOUT, "alpha": ALPHA, "seed": CAL_SEED}
    corpus = corpus_hash([as_example(case).to_json() for case in train])
    path = calibration_path(loaded.name)
    if path.exists():
        cached = load_calibration(path)
        settings: dict[str, Any] = cached.meta.get("settings") or {}  # type: ignore[assignment]
        if (
            cached.meta.get("model_hash") == model_hash(loaded)
            and cached.meta.get("corpus_hash") == corpus
            and settings.get("units") == "rag chunks"
            and all(settings.get(k) == v for k, v in want.items())
        ):
            print(f"{loaded.name}: reusing the calibration in {path}", flush=True)
            return cached
        print(f"{loaded.name}: {path} has other settings or training prompts: calibrating again", flush=True)
    print(f"{loaded.name}: calibrating on {n} training prompts x {ablations} ablations", flush=True)
    start = time.perf_counter()
    calibration = calibrate_rag(loaded, train, ablations=ablations, keep=KEEP, holdout=HOLDOUT, alpha=ALPHA, seed=CAL_SEED, progress=True)  # fmt: skip
    calibration.meta["benchmark"] = {
        "seconds": time.perf_counter() - start,
        "train_prompts": n,
        "train_seed": TRAIN_SEED,
    }
    calibration.save(path)
    print(f"{loaded.name}: wrote {path}; held-out {json.dumps(calibration.meta['heldout'])}", flush=True)
    return calibration


def calibration_summary(records: list[dict[str, Any]], metas: dict[str, dict[str, Any]]) -> str:
    """Per model: the calibration's own held-out scores and the time ratio calibrated / surrogate."""
    lines = []
    for model in sorted({str(r["model"]) for r in records}):
        mine = [r for r in records if r["model"] == model and "calibrated" in r]
        meta = metas.get(model)
        if meta is None and calibration_path(model).exists():
            from headmap.attribution.calibrated import load_calibration

            meta = load_calibration(calibration_path(model)).meta
        if not mine or meta is None:
            continue
        held, train, bench = meta.get("heldout") or {}, meta.get("train") or {}, meta.get("benchmark") or {}
        settings = meta.get("settings") or {}
        calibrated_s = float(np.mean([r["calibrated"]["seconds"] for r in mine]))
        surrogate_s = float(np.mean([r["surrogate"]["seconds"] for r in mine]))
        fitted = f", fitted in {bench['seconds']:.0f} s" if "seconds" in bench else ""
        nan = float("nan")
        lines.append(
            f"- {model}, calibrated: head weights from `calibrate_rag` ({settings.get('units', '?')}) fitted on "
            f"{train.get('examples', '?')} training prompts (seed {TRAIN_SEED}, not the test prompts) x "
            f"{settings.get('ablations', '?')} chunk ablations{fitted}. Its own held-out scores "
            f"({held.get('examples', 0)} more training-seed prompts): R\u00b2 {held.get('r2', nan):.2f} on their "
            f"ablations, Spearman with leave-one-out {held.get('spearman', nan):+.2f}, top chunk = "
            f"leave-one-out's {held.get('top1', nan):.0%}. Time per prompt: calibrated {calibrated_s:.3f} s, "
            f"surrogate {surrogate_s:.3f} s, ratio calibrated / surrogate {calibrated_s / surrogate_s:.3f}."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="a model, or several comma-separated")
    parser.add_argument("--prompts", type=int, default=100, help="test prompts (seed 0)")
    parser.add_argument("--ablations", type=int, default=32, help="the surrogate's ablations per test prompt")
    parser.add_argument(
        "--train", type=int, default=100, help="training prompts for calibrate_rag (seed 1; 0: no calibrated)"
    )
    parser.add_argument(
        "--train-ablations", type=int, default=32, help="calibrate_rag's ablations per prompt"
    )
    parser.add_argument(
        "--calibration", default=None, help="use this headmap calibrate file instead of calibrating"
    )
    parser.add_argument("--records", default=str(HERE / "rag_attribution.jsonl"))
    parser.add_argument("--table", action="store_true", help="only rewrite the README table from the records")
    args = parser.parse_args()
    records_path = Path(args.records)
    metas: dict[str, dict[str, Any]] = {}
    if not args.table:
        import headmap
        from headmap.apps.rag.prompt import check_causal_lm
        from headmap.errors import HeadmapError

        for name in args.model.split(","):
            loaded = headmap.load(name)
            try:
                check_causal_lm(loaded)
            except HeadmapError as exc:
                print(f"skipping {name}: rag refuses it ({exc})", flush=True)
                continue
            calibration = None
            if args.calibration:
                from headmap.attribution.calibrated import load_calibration

                calibration = load_calibration(args.calibration, loaded)
            elif args.train > 0:
                calibration = calibrated(loaded, args.train, args.train_ablations)
            if calibration is not None:
                metas[loaded.name] = calibration.meta
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
    summary = calibration_summary(records, metas)
    body = (
        f"Prompts: `benchmarks/rag_attribution.py` (seeded; 4-8 chunks, one holds the fact); surrogate: "
        f"{args.ablations} ablations; 95% bootstrap intervals over prompts; machine: 2 CPU cores.\n\n"
        + table(records)
        + (f"\n\n{summary}" if summary else "")
    )
    write_block("rag_attribution", body)
    print(table(records))
    if summary:
        print(summary)


if __name__ == "__main__":
    main()
