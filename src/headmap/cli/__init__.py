"""Stage 9, the ``headmap`` command line: a thin layer over the Python API, one module per command.

Exit codes: 0 success, 1 a problem with the input (one line on stderr naming the fix), 2 a usage
error (argparse), 130 interrupted. Only ``run`` functions import the stages that need torch, so that
``--help``, ``--version`` and usage errors answer in a fraction of a second.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from headmap.cli import (
    align,
    audit,
    bias,
    calibrate,
    capture,
    demo,
    explain,
    faithfulness,
    generate,
    heads,
    monitor,
    prune,
    rag,
    render,
    serve,
    stats,
)
from headmap.cli.common import package_version
from headmap.errors import HeadmapError

COMMANDS = (
    render,
    capture,
    stats,
    heads,
    align,
    monitor,
    demo,
    explain,
    generate,
    faithfulness,
    calibrate,
    rag,
    bias,
    prune,
    audit,
    serve,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="headmap",
        description="Capture and draw the attention maps of Transformer models. "
        "Attention is correlation, not causation: a map shows where a head looks, not why the model decides.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parsers(sub)
    return parser


def _quiet_transformers() -> None:
    """transformers' own progress bars and warnings would bury headmap's one-line messages."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command line, for records that keep it
    _quiet_transformers()
    try:
        # A command's run returns None, or an exit code of its own (verify: 1 when a number differs).
        code = args.run(args)
    except HeadmapError as exc:
        print(f"headmap: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("headmap: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)
