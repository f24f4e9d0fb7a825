"""``headmap align``: place a transcript's words in a clip's time with a speech model's alignment heads."""

from __future__ import annotations

import argparse
from pathlib import Path

from headmap.cli.common import add_device_args, add_outputs, check_outputs, load_model
from headmap.errors import HeadmapError

#: What ``-o`` writes: the word table (.csv, .parquet), everything (.json), the page and the picture.
ALIGN_EXTENSIONS = (".csv", ".json", ".parquet", ".html", ".png", ".svg", ".pdf")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    align = sub.add_parser(
        "align", help="word timings of a transcript in a clip, from a speech model's alignment heads"
    )
    align.add_argument("--audio", type=Path, required=True, help="a WAV file at the model's rate (16 kHz)")
    align.add_argument(
        "--model", "-m", required=True, help="a speech model (Whisper): local folder or hub id"
    )
    align.add_argument("--target", required=True, help="the transcript to align with the clip")
    align.add_argument(
        "--top", type=int, default=5, help="how many alignment heads to find (default: %(default)s)"
    )
    align.add_argument(
        "--heads",
        help="use these heads instead of finding them: LAYER/HEAD pairs, e.g. cross.3/1,cross.4/2",
    )
    align.add_argument(
        "--filter-width",
        type=int,
        default=7,
        help="median filter over time, in frames, before the time warping (default: %(default)s, Whisper's)",
    )
    align.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow model code from the model folder (off by default)",
    )
    add_device_args(align)
    add_outputs(align, "the words and heads: .csv, .json, .parquet, .html, .png, .svg or .pdf")
    align.set_defaults(run=run)


def parse_head_pairs(value: str | None) -> list[tuple[str, int]] | None:
    """``"cross.3/1,cross.4/2"`` -> ``[("cross.3", 1), ("cross.4", 2)]``; None: find the heads."""
    if value is None:
        return None
    pairs = []
    for item in value.split(","):
        layer, _, head = item.strip().partition("/")
        if not layer or not head.strip().isdigit():
            raise HeadmapError(f"--heads takes LAYER/HEAD pairs such as cross.3/1,cross.4/2, not {item!r}")
        pairs.append((layer, int(head)))
    return pairs


def run(args: argparse.Namespace) -> None:
    from headmap.analysis.align_result import align

    check_outputs(args.output, ALIGN_EXTENSIONS)
    heads = parse_head_pairs(args.heads)
    if not args.target.strip():
        raise HeadmapError("--target is empty: give the transcript of the clip")
    alignment = align(
        load_model(args), args.audio, args.target, top=args.top, heads=heads, filter_width=args.filter_width
    )
    print(alignment.summary())
    for output in args.output:
        print(f"wrote {alignment.save(output)}")
