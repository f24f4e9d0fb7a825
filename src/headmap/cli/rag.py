"""``headmap rag``: which retrieved chunks an answer draws on, by attention and by removing each one."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from headmap.cli.common import (
    add_device_args,
    add_outputs,
    check_outputs,
    load_model,
    parse_heads,
    parse_layers,
)
from headmap.errors import HeadmapError
from headmap.models import BUNDLED


def add_parsers(sub: argparse._SubParsersAction) -> None:
    rag = sub.add_parser(
        "rag",
        help="RAG debugging: attention on each retrieved chunk beside the answer's log-probability without it",
        description="Build the prompt from the question and the numbered chunks (chat template when the model has "
        "one), generate the answer greedily or take --answer, then report per chunk the attention the answer pays it "
        "(raw, position-calibrated, lookback ratio per head) and the drop in the answer's teacher-forced "
        "log-probability when the chunk is removed, with their Spearman agreement. Attention is correlation, "
        "not causation: the removal is the causal check.",
    )
    rag.add_argument("--question", "-q", required=True, help="the question the chunks should answer")
    rag.add_argument(
        "--chunks",
        "-c",
        required=True,
        type=Path,
        help='a .jsonl file (one {"text": ..., "id": ...} per line) or a .txt file (chunks separated '
        "by blank lines)",
    )
    rag.add_argument(
        "--model",
        "-m",
        default="smollm2",
        help=f"a causal LM: bundled name ({', '.join(BUNDLED)}), local folder, .gguf file or hub id "
        "(default: %(default)s)",
    )
    answer = rag.add_mutually_exclusive_group()
    answer.add_argument("--answer", "-a", help="check this answer (teacher-forced) instead of generating one")
    answer.add_argument(
        "--answer-ids", help="exact answer token ids, comma-separated (as in a report's JSON)"
    )
    rag.add_argument(
        "--max-new-tokens", type=int, default=48, help="longest generated answer (default: %(default)s)"
    )
    rag.add_argument(
        "--layers", default="all", help="layers to capture and average: comma-separated, or 'all'"
    )
    rag.add_argument("--heads", default="all", help="heads to capture and average: comma-separated, or 'all'")
    rag.add_argument(
        "--surrogate",
        type=int,
        nargs="?",
        const=32,
        default=0,
        metavar="K",
        help="also fit a ContextCite-style surrogate on K random ablations of the chunks (default K: 32) and "
        "report its agreement with leave-one-out",
    )
    rag.add_argument(
        "--seed", type=int, default=0, help="the surrogate's ablation seed (default: %(default)s)"
    )
    rag.add_argument(
        "--calibration",
        default=None,
        metavar="FILE",
        help="AT2-style head weights from `headmap calibrate --rag` (learned on chunk ablations): also "
        "weight each head's attention on the chunks (one forward) and report its agreement with leave-one-out",
    )
    add_outputs(rag, "the report: .html, .png, .svg, .pdf or .json")
    rag.add_argument("--quiet", action="store_true", help="do not print the table")
    rag.add_argument(
        "--trust-remote-code", action="store_true", help="allow model code from the model folder"
    )
    add_device_args(rag)
    rag.set_defaults(run=run)


def _answer_ids(value: str) -> list[int]:
    try:
        return [int(v) for v in value.replace(" ", "").strip("[]").split(",") if v]
    except ValueError:
        raise HeadmapError(
            f"--answer-ids takes comma-separated token ids such as 504,1594, not {value!r}"
        ) from None


def run(args: argparse.Namespace) -> None:
    from headmap.apps.rag import rag, read_chunks
    from headmap.render.report import COMMON

    check_outputs(args.output, [fmt.value for fmt in COMMON])
    if args.surrogate < 0 or args.surrogate == 1:
        raise HeadmapError("--surrogate takes at least 2 ablations (32 by default; 0: none)")
    chunks = read_chunks(args.chunks)
    answer = _answer_ids(args.answer_ids) if args.answer_ids is not None else args.answer
    model = load_model(args)
    report = rag(
        model,
        args.question,
        chunks,
        answer=answer,
        max_new_tokens=args.max_new_tokens,
        layers=parse_layers(args.layers),
        heads=parse_heads(args.heads),
        surrogate=args.surrogate,
        seed=args.seed,
        calibration=args.calibration,
        progress=sys.stderr.isatty(),
    )
    if not args.quiet:
        import pandas as pd

        with pd.option_context("display.width", 160, "display.max_columns", None, "display.precision", 4):
            print(f"answer: {report.answer}")
            print(f"log p(answer) = {report.answer_logprob:.4f}")
            print(report.table.to_string())
            print(report.verdict)
            print("agreement with leave-one-out (the causal reference):")
            print(report.costs.to_string(index=False))
            for line in [*report.warnings, report.caveats[0]]:
                print(line)
    for path in args.output:
        print(f"wrote {report.save(path)}", file=sys.stderr)
