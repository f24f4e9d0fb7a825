"""``headmap monitor-plot``: draw a training monitor file (each head's statistic over steps)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from headmap.cli.common import add_outputs, check_outputs


def add_parsers(sub: argparse._SubParsersAction) -> None:
    plot = sub.add_parser(
        "monitor-plot",
        help="draw a training monitor file: each head's statistic over steps",
        description="Draw a file written by headmap.record_heads or headmap.HeadMonitor: every "
        "head's statistic against the training step (coloured by layer) and each layer's mean.",
    )
    plot.add_argument("file", type=Path, help="a monitor file (.csv or .parquet)")
    add_outputs(plot, "the picture: .png, .svg or .pdf", required=True)
    plot.add_argument("--stat", default="entropy", help="statistic to draw (default: %(default)s)")
    plot.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from headmap.analysis.monitor_plot import plot_monitor
    from headmap.render.files import STATIC
    from headmap.render.report import save_figure

    check_outputs(args.output, STATIC)
    for path in args.output:
        # save_figure closes the figure it is given: draw one per file.
        save_figure(plot_monitor(args.file, stat=args.stat), path)
        print(f"wrote {path}", file=sys.stderr)
