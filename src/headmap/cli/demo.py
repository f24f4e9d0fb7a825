"""``headmap demo``: example pictures of a bundled model in a folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from headmap.cli.common import Once, add_device_args, load_options
from headmap.models import DEFAULT_MODEL

DEMO_TEXT = "The trophy didn't fit in the suitcase because it was too big."


def add_parsers(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="render example maps of a bundled model into a folder")
    demo.add_argument("--model", "-m", default=DEFAULT_MODEL, help="model to demo (default: %(default)s)")
    demo.add_argument(
        "--out",
        type=Path,
        action=Once,
        default=Path("headmap-demo"),
        help="folder for the pictures (default: %(default)s)",
    )
    demo.add_argument("--text", default=DEMO_TEXT)
    add_device_args(demo)
    demo.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from headmap.apps.demo import run_demo

    for path in run_demo(args.model, args.out, args.text, **load_options(args)):
        print(f"wrote {path}")
