"""Word-level faithfulness of every attribution method, calibrated attention included.

Per bundled model: calibrated attention's head weights are learned (:func:`headmap.calibrate`) on
``--train`` lines of ``corpora/sentences.txt`` that the evaluation never sees (lines 100 on), with
``--masks`` random word ablations each; then :func:`headmap.faithfulness` scores every method on
the first ``--texts`` lines: AOPC of the deletion curve, a seeded random ranking's AOPC, ERASER
comprehensiveness and sufficiency, and Spearman with leave-one-out, each a mean over texts with a
95% bootstrap interval (1,000 resamples of the texts).

Explained outputs: ``smollm2``, the log-probability of its top next token after the line (nats);
``minilm`` (no LM head), the cosine of the line's mean-pooled embedding with its own unablated
embedding (``compare=`` the text itself: what makes the embedding). On MiniLM the cosine with an
unrelated next line, the convention of ``faithfulness.py``, cannot be calibrated: its held-out
R² is about 0 (measured: -0.03, Spearman with leave-one-out +0.03 on 12 held-out texts), because
removing a word moves that cosine either way and attention carries no sign.

Finished texts go to ``--records`` (one JSON line per text and method) as they complete, so an
interrupted run keeps them and a rerun continues; the calibration is cached beside it
(``word_calibration_<model>.safetensors``) and reused when its settings match. The summary goes
to ``--summary`` and the table between the ``word_faithfulness`` markers of benchmarks/README.md.

Run: ``python benchmarks/word_faithfulness.py --texts 20`` (smoke: ``--texts 2 --train 6``).
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
from headmap.attribution.calibrated import Calibration, load_calibration  # noqa: E402
from headmap.attribution.faithfulness import GRID  # noqa: E402
from headmap.attribution.faithfulness_report import METRICS, FaithfulnessReport  # noqa: E402

METHODS = "attention,rollout,flow,attention_x_gradient,input_x_gradient,ig,occlusion,calibrated"
TRAIN_START = 100
LABELS = {
    "aopc": "AOPC",
    "random_aopc": "random AOPC",
    "comprehensiveness": "comprehensiveness",
    "sufficiency": "sufficiency",
    "loo_spearman": "Spearman with LOO",
}


def lines() -> list[str]:
    return [s.strip() for s in (ROOT / "corpora" / "sentences.txt").read_text().splitlines() if s.strip()]


def calibration_for(loaded, model: str, train: list[str], masks: int, path: Path) -> Calibration:  # type: ignore[no-untyped-def]
    """The cached calibration when its settings match, else a fresh one (saved to ``path``)."""
    want = {"masks": masks, "texts": len(train), "start": TRAIN_START}
    if path.exists():
        cached = load_calibration(path, loaded)
        if cached.meta.get("benchmark") == want:
            return cached
    start = time.perf_counter()
    calibration = headmap.calibrate(
        loaded, train, masks=masks, compare=train if model == "minilm" else None, seed=0, progress=True
    )
    meta = {**calibration.meta, "benchmark": want, "seconds": time.perf_counter() - start}
    calibration = Calibration(calibration.weights, meta)
    calibration.save(path)
    return calibration


def evaluate(loaded, model: str, texts: list[str], calibration: Calibration, records: Path, methods: str):  # type: ignore[no-untyped-def]
    """The faithfulness report over ``texts``, resumed from and appended to ``records``."""
    records.parent.mkdir(parents=True, exist_ok=True)
    report = FaithfulnessReport(loaded.name, "words", tuple(GRID), seed=0, n_boot=1000)
    if records.exists():
        report.records = [json.loads(x) for x in records.read_text().splitlines() if x.strip()]
    from tqdm.auto import tqdm

    for stop in tqdm(range(1, len(texts) + 1), desc=model, unit="text"):
        if any(r["text_index"] == stop - 1 for r in report.records):
            continue
        before = len(report.records)
        start = time.perf_counter()
        headmap.faithfulness(
            loaded,
            texts[:stop],
            methods,
            compare=texts[:stop] if model == "minilm" else None,
            report=report,
            calibration=calibration,
            n_boot=1000,
        )
        seconds = time.perf_counter() - start
        with records.open("a", encoding="utf-8") as sink:
            for r in report.records[before:]:
                sink.write(json.dumps({**r, "seconds_text": seconds}) + "\n")
    report.records = [r for r in report.records if r["text_index"] < len(texts)]
    return report


def cell(value: tuple[float, float, float], digits: int) -> str:
    mean, low, high = value
    if not np.isfinite(mean):
        return "-"
    return f"{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def table(results: dict[str, dict[str, object]], machine: str) -> str:
    out = [
        f"Run: {machine}. Mean over texts [95% bootstrap interval]. Higher AOPC and comprehensiveness, "
        "lower sufficiency, higher Spearman with leave-one-out (LOO) = more faithful; `random AOPC`: a seeded "
        "random ranking of the same text. Units: words.",
        "",
        "| model | method | " + " | ".join(LABELS[m] for m in METRICS) + " |",
        "|---|---|" + "---|" * len(METRICS),
    ]
    for model, result in results.items():
        digits = 3 if model == "minilm" else 2
        summary: dict[str, dict[str, tuple[float, float, float]]] = result["summary"]  # type: ignore[assignment]
        for method, metrics in summary.items():
            cells = [cell(metrics[m], digits) for m in METRICS]
            out.append(f"| {model} | {method} | " + " | ".join(cells) + " |")
    for model, result in results.items():
        held = result["heldout"]
        out.append("")
        out.append(
            f"{model}: calibration on {result['train']} texts ({result['masks']} ablations each, "
            f"{float(result['calibration_seconds']):.0f} s), held-out ({held['texts']} texts): "  # type: ignore[index]
            f"R² {held['r2']:.2f}, Spearman with LOO {held['spearman']:+.2f}, top-1 {held['top1']:.0%}; "  # type: ignore[index]
            f"{result['nonzero']} of {result['heads']} heads weighted; {result['texts']} evaluated texts."
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="smollm2,minilm")
    parser.add_argument("--texts", type=int, default=20, help="evaluated texts: the corpus's first lines")
    parser.add_argument("--train", type=int, default=100, help="calibration texts, from line 100 on")
    parser.add_argument("--masks", type=int, default=32)
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--records", type=Path, default=HERE / "word_faithfulness.jsonl")
    parser.add_argument("--summary", type=Path, default=HERE / "word_faithfulness.json")
    parser.add_argument("--no-table", action="store_true")
    args = parser.parse_args()
    corpus = lines()
    texts, train = corpus[: args.texts], corpus[TRAIN_START : TRAIN_START + args.train]
    results: dict[str, dict[str, object]] = {}
    try:
        for model in args.models.split(","):
            loaded = headmap.load(model)
            calibration = calibration_for(
                loaded, model, train, args.masks, HERE / f"word_calibration_{model}.safetensors"
            )
            records = args.records.with_name(f"{args.records.stem}_{model}{args.records.suffix}")
            report = evaluate(loaded, model, texts, calibration, records, args.methods)
            w = calibration.weights
            results[model] = {
                "summary": report.summary(),
                "heldout": calibration.meta["heldout"],
                "train": len(train),
                "masks": args.masks,
                "calibration_seconds": calibration.meta.get("seconds", float("nan")),
                "nonzero": int((w > 0).sum()),
                "heads": int(w.size),
                "texts": len({r["text_index"] for r in report.records}),
                "seconds_per_text": float(
                    np.mean([r["seconds_text"] for r in report.records if "seconds_text" in r] or [np.nan])
                ),
            }
    except KeyboardInterrupt:
        print(f"interrupted: finished texts are kept in {args.records.parent}", file=sys.stderr)
        raise SystemExit(130) from None
    import torch

    machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads, float32"
    args.summary.write_text(json.dumps({"machine": machine, "results": results}, indent=1, default=list))
    body = table(results, machine)
    print(body)
    if not args.no_table:
        write_block("word_faithfulness", body)


if __name__ == "__main__":
    main()
