"""Deletion/insertion faithfulness (AOPC, ERASER comprehensiveness/sufficiency, LOO agreement) and
the needle test, with :func:`headmap.faithfulness` and :func:`headmap.attribution.needle.needle_test`.

Per model, over the first ``--texts`` lines of ``corpora/sentences.txt``: ``smollm2`` explains the
log-probability of its top next token after the line; ``minilm`` (no LM head) the cosine similarity
of the line's mean-pooled embedding with the next line's. Then the needle test on ``smollm2`` at
``--needle`` token budgets (attention and sentence occlusion; CPU: ~1 min at 1k tokens, the 8k
forward alone ~30 s and its sentence occlusion hours, so 8k belongs on a GPU).

Run: ``python benchmarks/faithfulness_harness.py --texts 20 --needle 1000`` (writes
``benchmarks/faithfulness_harness.json``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import headmap
from headmap.attribution.faithfulness_report import METRICS
from headmap.attribution.needle import needle_test

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=20)
    parser.add_argument("--methods", default="attention,input_x_gradient,ig,occlusion")
    parser.add_argument("--needle", default="1000")
    parser.add_argument("--models", default="smollm2,minilm")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "faithfulness_harness.json")
    args = parser.parse_args()
    lines = [s.strip() for s in (ROOT / "corpora" / "sentences.txt").read_text().splitlines() if s.strip()]
    texts = lines[: args.texts]
    out: dict[str, object] = {"texts": len(texts), "methods": args.methods}
    for name in args.models.split(","):
        model = headmap.load(name)
        start = time.perf_counter()
        if name == "minilm":
            parts = [
                headmap.faithfulness(model, [t], args.methods, compare=lines[i + 1], seed=i, n_boot=10)
                for i, t in enumerate(texts)
            ]
            report = parts[0]
            report.n_boot = 1000
            for i, part in enumerate(parts[1:], start=1):
                report.records += [{**r, "text_index": i} for r in part.records]
        else:
            report = headmap.faithfulness(model, texts, args.methods)
        summary = report.summary()
        out[name] = {
            "seconds": time.perf_counter() - start,
            "summary": {m: {k: list(v) for k, v in s.items()} for m, s in summary.items()},
        }
        print(name, f"{time.perf_counter() - start:.0f}s")
        for m, s in summary.items():
            print(
                f"  {m:<20}",
                "  ".join(f"{k} {s[k][0]:+.3f} [{s[k][1]:+.3f},{s[k][2]:+.3f}]" for k in METRICS),
            )
    if args.needle:
        smollm2 = headmap.load("smollm2")
        sizes = [int(s) for s in args.needle.split(",")]
        start = time.perf_counter()
        out["needle"] = needle_test(smollm2, sizes, "attention,occlusion")
        print("needle", f"{time.perf_counter() - start:.0f}s", out["needle"])
    args.out.write_text(json.dumps(out, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
