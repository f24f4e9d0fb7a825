"""Calibrated attention (AT2-style) on RAG-style prompts: does one forward find the chunk that
leave-one-out finds, and how close is it to a 32-ablation surrogate (ContextCite-style)?

Prompts are built deterministically from local text (no network): 6 chunks per prompt, one holds
"The code for the <place> is <number>.", two hold other places' codes, three are lines of
``corpora/sentences.txt``; the question asks for the first place's code and the explained output
is the model's top next token after "Answer: The code for the <place> is". Chunks are the units.

Calibration: ``headmap.calibrate`` on ``--train`` prompts with chunk units (``--masks`` ablations
each). Test prompts: per prompt, the leave-one-chunk-out drops (the reference), calibrated
attention (one streamed forward), plain attention (every head, equal weights) and a surrogate
fitted on 32 random chunk ablations (least squares, as ContextCite); reported: top-1 agreement
with leave-one-out, mean Spearman, and seconds per prompt.

Run: ``python benchmarks/calibrate.py`` (smollm2 on the CPU, a few minutes; smoke: ``--train 4 --test 2``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

PLACES = ("vault", "garage", "lobby", "roof", "archive", "lab", "cellar", "studio", "gym", "library")


def prompts(count: int, seed: int) -> list[tuple[str, list[tuple[int, int]], int]]:
    """``(text, chunk character spans, index of the answer chunk)`` per prompt."""
    rng = np.random.default_rng(seed)
    lines = [x.strip() for x in (ROOT / "corpora" / "sentences.txt").read_text().splitlines() if x.strip()]
    out = []
    for _ in range(count):
        places = rng.choice(PLACES, 3, replace=False)
        codes = rng.integers(1000, 9999, 3)
        chunks = [f"The code for the {p} is {c}." for p, c in zip(places, codes)]
        chunks += [lines[i] for i in rng.choice(len(lines), 3, replace=False)]
        order = rng.permutation(len(chunks))
        chunks = [chunks[i] for i in order]
        answer = int(np.flatnonzero(order == 0)[0])
        text, spans = "Context:\n", []
        for chunk in chunks:
            spans.append((len(text), len(text) + len(chunk)))
            text += chunk + "\n"
        text += f"Question: What is the code for the {places[0]}?\nAnswer: The code for the {places[0]} is"
        out.append((text, spans, answer))
    return out


def chunk_units(spans: list[tuple[int, int]]):
    def units(problem):
        groups = []
        for start, end in spans:
            groups.append(
                tuple(
                    i
                    for i, (a, b) in enumerate(problem.tokens.offsets)
                    if not problem.tokens.special[i] and b > a and a >= start and b <= end + 1
                )
            )
        return groups

    units.__name__ = "chunks"
    return units


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--train", type=int, default=24)
    parser.add_argument("--test", type=int, default=12)
    parser.add_argument("--masks", type=int, default=32)
    parser.add_argument("--out", type=Path, default=HERE / "calibrate.json")
    args = parser.parse_args()

    from scipy.stats import spearmanr

    import headmap
    from headmap.attribution.calibrated import token_features, unit_features
    from headmap.attribution.explain import problem_for
    from headmap.attribution.occlusion import occlusion_scores

    loaded = headmap.load(args.model)
    train = prompts(args.train, seed=0)
    started = time.perf_counter()
    calibration = headmap.calibrate(
        loaded,
        [t for t, _, _ in train],
        masks=args.masks,
        holdout=0.0,
        units=lambda p: chunk_units(next(s for t, s, _ in train if t == p.tokens.text))(p),
    )
    fit_seconds = time.perf_counter() - started
    rows = []
    rng = np.random.default_rng(1)
    for text, spans, answer in prompts(args.test, seed=1):
        problem = problem_for(loaded, text)
        units = chunk_units(spans)(problem)
        output = problem.output()
        t0 = time.perf_counter()
        loo = occlusion_scores(problem, units, output)
        t_loo = time.perf_counter() - t0
        t0 = time.perf_counter()
        feats = unit_features(token_features(problem), units)
        cal = calibration.predict(feats)
        t_cal = time.perf_counter() - t0
        plain = feats.sum((1, 2))
        t0 = time.perf_counter()
        masks = rng.random((32, len(units))) < 0.5
        masks = masks[~masks.all(1)]  # each ablation removes a chunk
        removed = [tuple(i for u in np.flatnonzero(~m) for i in units[int(u)]) for m in masks]
        drops = occlusion_scores(problem, removed, output)
        ok = np.isfinite(drops)
        x = np.c_[(~masks[ok]).astype(float), np.ones(ok.sum())]
        surrogate = np.linalg.lstsq(x, drops[ok], rcond=None)[0][:-1]
        t_sur = time.perf_counter() - t0
        row = {"answer_chunk": answer, "loo_top": int(np.argmax(loo))}
        for name, scores, secs in (
            ("calibrated", cal, t_cal),
            ("attention", plain, t_cal),
            ("surrogate32", surrogate, t_sur),
            ("loo", loo, t_loo),
        ):
            row[name] = {
                "top1_loo": float(np.argmax(scores) == np.argmax(loo)),
                "top1_answer": float(np.argmax(scores) == answer),
                "spearman": float(spearmanr(scores, loo).statistic),
                "seconds": secs,
            }
        rows.append(row)
    summary = {
        "model": args.model,
        "train": args.train,
        "test": args.test,
        "masks": args.masks,
        "fit_seconds": fit_seconds,
        "heldout_note": "test prompts are separate (seed 1); calibration on seed-0 prompts",
        "methods": {
            name: {
                key: float(np.nanmean([r[name][key] for r in rows]))
                for key in ("top1_loo", "top1_answer", "spearman", "seconds")
            }
            for name in ("calibrated", "attention", "surrogate32", "loo")
        },
    }
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
