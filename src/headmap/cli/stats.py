"""``headmap stats``: per-head statistics of one (long) text, streamed; or, with ``--image``/``--images``,
an image model's patch statistics over one image or a folder of them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from headmap.cli.common import (
    add_model_args,
    add_outputs,
    check_outputs,
    load_model,
    note_paths,
    parse_heads,
    parse_layers,
    read_text,
)
from headmap.errors import HeadmapError
from headmap.result import CAUSATION_WARNING

if TYPE_CHECKING:
    from headmap.analysis.stats import HeadStats

#: Heads shown per statistic in the summary printed when the table goes to a file.
TOP = 3


def add_parsers(sub: argparse._SubParsersAction) -> None:
    stats = sub.add_parser(
        "stats", help="per-head statistics (entropy, distance, sinks, ...) streamed over long inputs"
    )
    add_model_args(stats, image=True)
    stats.add_argument(
        "--images",
        type=Path,
        metavar="FOLDER",
        help="an image model's patch statistics (entropy, grid distance, CLS and register shares) "
        "averaged over every image in FOLDER (not with a text)",
    )
    stats.add_argument("--layers", default="all", help="comma-separated layers (indices or names), or 'all'")
    stats.add_argument("--heads", default="all", help="comma-separated heads, or 'all'")
    add_outputs(stats, "the table: .csv, .json or .parquet")
    stats.add_argument(
        "--table",
        action="store_true",
        help="print the whole table even when -o writes it (without -o it is always printed)",
    )
    stats.add_argument("--quiet", "-q", action="store_true", help="print nothing but the files written")
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

    check_outputs(args.output, STATS_EXTENSIONS)
    images = args.images if args.images is not None else args.image
    if images is not None:
        if args.text is not None or (args.image is not None and args.images is not None):
            raise HeadmapError("give a text, --image PATH or --images FOLDER, one of them")
        run_images(args, images)
        return
    if args.text is None:
        raise HeadmapError("give a text, --image PATH or --images FOLDER")
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
    assert not isinstance(stats, list)  # one text in, one HeadStats out
    note_paths(stats)
    if not args.quiet:
        # A file holds the table: the terminal gets a few lines unless the table is asked for.
        print(stats.format_table() if args.table or not args.output else summary(stats))
    for path in args.output:
        print(f"wrote {stats.save(path)}", file=sys.stderr)


def run_images(args: argparse.Namespace, images: Path) -> None:
    """Patch statistics of an image model over one image or a folder of images."""
    from headmap.analysis.patch_stats import patch_stats

    model = load_model(args)
    stats = patch_stats(
        model,
        images,
        layers=parse_layers(args.layers),
        heads=parse_heads(args.heads),
        progress=sys.stderr.isatty(),
    )
    note_paths(stats)
    if not args.quiet:
        print(stats.to_pandas().to_string(index=False) if args.table or not args.output else stats.summary())
    for path in args.output:
        print(f"wrote {stats.save(path)}", file=sys.stderr)


def summary(stats: HeadStats, top: int = TOP) -> str:
    """A few lines: per statistic, the ``top`` heads with the highest value (NaN cells skipped)."""
    from headmap.analysis.stats import STATS

    n_heads = int(np.isfinite(stats.entropy).sum())
    lines = [
        f"{n_heads} heads over {len(stats.tokens)} tokens, model {stats.model}; "
        f"the {top} highest per statistic (layer/head value):"
    ]
    width = max(map(len, STATS))
    for name in STATS:
        values = stats.stat(name).ravel()  # [layer * head]
        best = [i for i in np.argsort(-values, kind="stable") if np.isfinite(values[i])][:top]
        cells = "   ".join(
            f"{stats.layers[i // len(stats.heads)].name}/{stats.heads[i % len(stats.heads)]} {values[i]:.4f}"
            for i in best
        )
        lines.append(f"  {name:<{width}}  {cells or '(no finite values)'}")
    lines.append(f"# the whole table: --table, or the file written. {CAUSATION_WARNING}")
    return "\n".join(lines)
