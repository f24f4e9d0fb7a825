"""``headmap prune``: remove attention heads by importance, entropy or at random; cut them out for real."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from headmap.cli.common import Once, add_device_args, add_outputs, check_outputs, load_model
from headmap.errors import HeadmapError
from headmap.models import BUNDLED, DEFAULT_MODEL


def add_parsers(sub: argparse._SubParsersAction) -> None:
    prune = sub.add_parser(
        "prune",
        help="head pruning: quality vs heads removed per order (--curve), and a physically cut model (--amount)",
        description="Rank heads by importance (Michel et al. 2019: |d loss / d gate|, l2-normalized per layer, "
        "recomputed after each step), and compare with random orders and the entropy order (broadest heads first). "
        "--curve measures held-out quality (perplexity for decoders; for sentence encoders the Spearman of pairwise "
        "similarities and the mean cosine to the unpruned embeddings) as heads are gated off, step by step. "
        "--amount cuts that share of heads out of the query/key/value and output projections (GQA-aware) and "
        "--out saves the cut model as a safetensors folder that headmap.load and headmap capture accept. "
        "Heads are removed without fine-tuning.",
    )
    prune.add_argument(
        "--model",
        "-m",
        default=DEFAULT_MODEL,
        help=f"bundled name ({', '.join(BUNDLED)}), local folder, .gguf file or hub id "
        "(default: %(default)s)",
    )
    prune.add_argument(
        "--texts",
        "-t",
        required=True,
        type=Path,
        help="texts that rank the heads: .txt (one per line), .jsonl (a text field) or a folder of .txt",
    )
    prune.add_argument(
        "--heldout",
        type=Path,
        default=None,
        help="held-out texts that measure quality, one per line (default: corpora/heldout.txt)",
    )
    prune.add_argument(
        "--amount",
        type=float,
        default=None,
        help="share of all heads to cut out, e.g. 0.3 (at least one head stays in each layer)",
    )
    prune.add_argument(
        "--curve",
        action="store_true",
        help="measure quality vs share removed for the importance, entropy and random orders",
    )
    prune.add_argument(
        "--order",
        default="importance",
        choices=("importance", "entropy", "random"),
        help="the order --amount follows (default: %(default)s; random uses the first seed)",
    )
    prune.add_argument(
        "--seeds", default="0,1,2", help="seeds of the random orders, comma-separated (default: %(default)s)"
    )
    prune.add_argument(
        "--step",
        type=float,
        default=0.1,
        help="share of all heads per step; importance is recomputed after each (default: %(default)s)",
    )
    prune.add_argument("--max-texts", type=int, default=None, help="use only the first N texts of --texts")
    prune.add_argument("--batch-size", type=int, default=8, help="texts per forward (default: %(default)s)")
    prune.add_argument(
        "--latency-repeats",
        type=int,
        default=5,
        help="forwards timed per model for the latency median, 0 to skip (default: %(default)s)",
    )
    prune.add_argument(
        "--out",
        type=Path,
        action=Once,
        default=None,
        help="save the cut model into this new folder (needs --amount)",
    )
    add_outputs(prune, "the report: .png, .svg, .pdf (the curve), .html or .json")
    prune.add_argument("--quiet", "-q", action="store_true", help="print only the summary, not the table")
    prune.add_argument(
        "--trust-remote-code", action="store_true", help="allow model code from the model folder"
    )
    add_device_args(prune)
    prune.set_defaults(run=run)


def _seeds(value: str) -> list[int]:
    try:
        seeds = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise HeadmapError(f"--seeds takes comma-separated integers such as 0,1,2, not {value!r}") from None
    if not seeds:
        raise HeadmapError("--seeds needs at least one seed")
    return seeds


def run(args: argparse.Namespace) -> None:
    from headmap.apps.prune import prune
    from headmap.render.report import COMMON

    if args.amount is None and not args.curve:
        raise HeadmapError(
            "nothing to do: give --amount SHARE (cut heads out) and/or --curve (measure the orders)"
        )
    if args.out is not None:
        if args.amount is None:
            raise HeadmapError("--out saves the cut model: give --amount too")
        if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
            raise HeadmapError(
                f"{args.out} already exists and is not an empty folder: choose a new --out folder"
            )
    check_outputs(args.output, [fmt.value for fmt in COMMON])
    if not args.texts.exists():
        raise HeadmapError(f"{args.texts} does not exist: --texts takes a .txt/.jsonl file or a folder")
    seeds = _seeds(args.seeds)
    model = load_model(args)
    report = prune(
        model,
        args.texts,
        amount=args.amount,
        curve=args.curve,
        order=args.order,
        seeds=seeds,
        heldout=args.heldout,
        step=args.step,
        max_texts=args.max_texts,
        batch_size=args.batch_size,
        out=args.out,
        latency_repeats=args.latency_repeats,
        progress=sys.stderr.isatty(),
    )
    if not args.quiet and report.curves:
        import pandas as pd

        with pd.option_context("display.width", 160, "display.max_columns", None, "display.precision", 4):
            print(report.table.to_string(index=False))
    print("\n".join([*report.summary, *report.notes]))
    for path in args.output:
        print(f"wrote {report.save(path)}", file=sys.stderr)
    if report.pruning is not None and report.pruning.folder is not None:
        print(f"wrote {report.pruning.folder} (load it with headmap.load or --model)", file=sys.stderr)
    if report.interrupted:
        raise KeyboardInterrupt
