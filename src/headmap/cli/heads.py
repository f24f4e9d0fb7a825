"""``headmap heads``: measure every head over a corpus and write a report folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from headmap.cli.common import Once, add_device_args, load_model, load_options, parse_heads, parse_layers
from headmap.models import BUNDLED, DEFAULT_MODEL

if TYPE_CHECKING:  # for annotations only: the engines load on use
    from headmap.analysis.engines import Engine


def add_parsers(sub: argparse._SubParsersAction) -> None:
    heads = sub.add_parser(
        "heads",
        help="corpus report: per-head statistics, roles, head distances, importance",
        description="Measure every attention head over a corpus (a .txt file with one text per line, a .jsonl "
        "file with a 'text' field per line, or a folder of .txt files) and write heads.csv, heads.parquet, "
        "distances.csv, pictures and report.html into --out. Finished texts are kept in OUT/partials as they "
        "complete: after Ctrl-C, rerun the same command to continue. Attention is correlation, not causation.",
    )
    heads.add_argument("corpus", type=Path, help="a .txt or .jsonl file, or a folder of .txt files")
    heads.add_argument(
        "--model",
        "-m",
        default=DEFAULT_MODEL,
        help=f"bundled name ({', '.join(BUNDLED)}), local model folder, .gguf file or hub id (default: %(default)s)",
    )
    heads.add_argument(
        "--out", "-o", type=Path, action=Once, required=True, help="report folder (created if missing)"
    )
    heads.add_argument("--layers", default="all", help="comma-separated layers (indices or names), or 'all'")
    heads.add_argument("--heads", default="all", help="comma-separated heads, or 'all'")
    heads.add_argument("--max-texts", type=int, help="use only the first N texts of the corpus")
    heads.add_argument(
        "--batch-size", type=int, default=8, help="texts per forward pass (default: %(default)s)"
    )
    heads.add_argument("--no-diversity", action="store_true", help="skip head distances, clustering and MDS")
    heads.add_argument(
        "--importance",
        action="store_true",
        help="add head importance (Michel et al. 2019): |d loss / d gate| per head, mean over texts",
    )
    heads.add_argument(
        "--loss",
        choices=("causal", "mlm"),
        help="importance loss (default: next-token cross-entropy for decoders, masked-LM loss for "
        "models with an MLM head; other models need a loss function through the Python API)",
    )
    heads.add_argument(
        "--budget-mb",
        type=int,
        default=256,
        help="memory for the maps that head distances hold at once (default: %(default)s MB)",
    )
    heads.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="where the per-text work runs: this process (default) or Ray Data workers "
        "(pip install '.[ray]' in a clone of headmap); the table is the same",
    )
    heads.add_argument(
        "--address",
        help="with --engine ray: join this Ray cluster ('auto' or ray://host:port); "
        "without it Ray starts on this machine for the run",
    )
    heads.add_argument(
        "--workers",
        type=int,
        default=2,
        help="with --engine ray: workers, each loading the model once (default: %(default)s)",
    )
    heads.add_argument(
        "--gpus-per-worker", type=float, default=0.0, help="with --engine ray: GPUs per worker (default: 0)"
    )
    heads.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    heads.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow model code from the model folder (off by default)",
    )
    add_device_args(heads)
    heads.set_defaults(run=run)


def _engine(args: argparse.Namespace) -> Engine:
    from headmap.analysis.engines import LocalEngine
    from headmap.errors import HeadmapError

    if args.engine == "local":
        if args.address:
            raise HeadmapError("--address needs --engine ray")
        return LocalEngine()
    from headmap.analysis.ray_engine import RayEngine

    if args.workers < 1:
        raise HeadmapError(f"--workers must be at least 1, not {args.workers}")
    return RayEngine(
        address=args.address,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        trust_remote_code=args.trust_remote_code,
        load_options=load_options(args),
    )


def run(args: argparse.Namespace) -> None:
    from headmap.analysis.corpus import read_corpus
    from headmap.analysis.report import PARTIALS, head_report
    from headmap.errors import HeadmapError

    if args.batch_size < 1:
        raise HeadmapError(f"--batch-size must be at least 1, not {args.batch_size}")
    if args.budget_mb < 1:
        raise HeadmapError(f"--budget-mb must be at least 1, not {args.budget_mb}")
    corpus = read_corpus(args.corpus, args.max_texts)  # a malformed corpus fails before the model loads
    model = load_model(args)
    try:
        report = head_report(
            model,
            # head_report takes a read corpus too (as_corpus does); analysis/report.py's annotation lags.
            corpus,  # type: ignore[arg-type]  # a list[CorpusText] is accepted at run time
            layers=parse_layers(args.layers),
            heads=parse_heads(args.heads),
            batch_size=args.batch_size,
            diversity=not args.no_diversity,
            importance=args.importance,
            loss=args.loss,
            out=args.out,
            budget_bytes=args.budget_mb * 2**20,
            engine=_engine(args),
            progress=not args.quiet,
        )
    except KeyboardInterrupt:
        print(
            f"headmap: finished texts are kept in {args.out / PARTIALS}; rerun the same command to continue",
            file=sys.stderr,
        )
        raise
    for note in report.notes:
        print(f"headmap: {note}", file=sys.stderr)
    counts = report.table["role"].value_counts()
    roles = ", ".join(f"{n} {role}" for role, n in counts.items())
    print(
        f"{report.spec.n_heads} heads over {report.n_texts} texts ({report.combined.n_tokens} tokens): {roles}"
    )
    print(f"wrote {args.out / 'report.html'}", file=sys.stderr)
