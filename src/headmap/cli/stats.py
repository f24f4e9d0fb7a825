"""``headmap stats``: per-head statistics of one (long) text, streamed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from headmap.cli.common import (
    add_model_args,
    check_output,
    load_model,
    note_paths,
    parse_heads,
    parse_layers,
    read_text,
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    stats = sub.add_parser(
        "stats", help="per-head statistics (entropy, distance, sinks, ...) streamed over long inputs"
    )
    add_model_args(stats)
    stats.add_argument("--layers", default="all", help="comma-separated layers (indices or names), or 'all'")
    stats.add_argument("--heads", default="all", help="comma-separated heads, or 'all'")
    stats.add_argument("--output", "-o", type=Path, help="also write the table: .csv, .json or .parquet")
    stats.add_argument("--quiet", "-q", action="store_true", help="do not print the table")
    stats.add_argument(
        "--exact",
        action="store_true",
        help="let the model's own kernel run and recompute the weights afterwards, instead of "
        "headmap's fused one-pass kernel (slower; same statistics to float32 rounding)",
    )
    stats.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from headmap.analysis.stats import collect_stats
    from headmap.analysis.stats_io import STATS_EXTENSIONS

    if args.output is not None:
        check_output(args.output, STATS_EXTENSIONS)
    text = read_text(args.text)
    model = load_model(args)
    stats = collect_stats(
        model,
        text,
        layers=parse_layers(args.layers),
        heads=parse_heads(args.heads),
        target=args.target,
        progress=sys.stderr.isatty() or len(text) > 2000,
        fused=not args.exact,
    )
    note_paths(stats)
    if not args.quiet:
        print(stats.format_table())
    if args.output is not None:
        print(f"wrote {stats.save(args.output)}", file=sys.stderr)
