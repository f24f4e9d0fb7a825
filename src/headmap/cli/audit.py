"""``headmap audit`` (one decision's record: evidence, causal checks, provenance) and ``headmap verify``
(re-run a record and check every number).

``verify`` exits 0 when every number matches, 1 when a file changed or a number differs (each one
named), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from headmap.cli.common import add_device_args, add_outputs, check_outputs, int_arg, load_model, read_text
from headmap.errors import HeadmapError
from headmap.models import BUNDLED, DEFAULT_MODEL

EXTENSIONS = (".json", ".html", ".pdf", ".png", ".svg")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser(
        "audit",
        help="one decision's audit record: evidence in plain language, causal checks, provenance (.html/.pdf/.json)",
        description="Bundle, for one output of a model: the input, the output and its top alternatives, "
        "attention beside occlusion and the other methods with their agreement and faithfulness, the heads "
        "most involved and their roles, causal checks (removing the top words, zeroing the top heads), a "
        "plain-language summary and caveats, and the sha256 of every model file. `headmap verify` checks it "
        "again later. Attention is correlation, not causation.",
    )
    audit.add_argument("text", help="the input text, a path to a UTF-8 text file, or - for stdin")
    audit.add_argument(
        "--model",
        "-m",
        default=DEFAULT_MODEL,
        help=f"bundled name ({', '.join(BUNDLED)}), local model folder, .gguf file or hub id (default: %(default)s)",
    )
    audit.add_argument(
        "--target",
        "-t",
        help="token whose log-probability is explained (decoders: next token; masked LMs: at the [MASK]); "
        "default: the model's top token",
    )
    audit.add_argument(
        "--compare",
        "-c",
        help="explain the cosine similarity of the embedding with this text (encoders such as minilm)",
    )
    audit.add_argument(
        "--position", "-p", default=None, help="explained token (default: the last, or the [MASK])"
    )
    audit.add_argument("--methods", default=None, help="comma-separated methods (default: all that apply)")
    audit.add_argument("--calibration", type=Path, default=None, help="weights from `headmap calibrate`")
    audit.add_argument("--top-k", type=int, default=3, help="words removed in the causal check (default: 3)")
    audit.add_argument("--top-heads", type=int, default=3, help="heads reported and zeroed (default: 3)")
    audit.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help="reference sentences for the head roles, one a line (first 16; default corpora/sentences.txt)",
    )
    audit.add_argument("--seed", type=int, default=0, help="seed of the random rankings (default: 0)")
    audit.add_argument("--steps", type=int, default=50, help="Integrated Gradients steps to start from")
    audit.add_argument("--max-steps", type=int, default=400, help="Integrated Gradients steps at most")
    add_outputs(audit, "the record: .json (what verify reads), .html, .pdf (several pages), .png or .svg")
    audit.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow model code from the model folder (off by default)",
    )
    add_device_args(audit)
    audit.set_defaults(run=run_audit)

    verify = sub.add_parser(
        "verify",
        help="re-run an audit record and check that every number matches (exit 0) or say what differs (exit 1)",
        description="Check the sha256 of every model file an audit record names, re-run the record with its "
        "settings and compare every number: bitwise where the computation is deterministic (CPU float32 "
        "forward passes), within a stated tolerance otherwise (gradients; other devices).",
    )
    verify.add_argument("record", type=Path, help="an audit record written by `headmap audit -o record.json`")
    verify.add_argument("--device", default=None, help="run on this device instead of the recorded one")
    verify.set_defaults(run=run_verify)


def run_audit(args: argparse.Namespace) -> None:
    from headmap.apps.audit import audit

    check_outputs(args.output, EXTENSIONS)
    if args.top_k < 1 or args.top_heads < 1:
        raise HeadmapError("--top-k and --top-heads must be at least 1")
    if args.steps < 2 or args.max_steps < args.steps:
        raise HeadmapError("--steps must be at least 2 and --max-steps at least --steps")
    text = read_text(args.text)
    position = None if args.position is None else int_arg(args.position, "--position")
    model = load_model(args)
    record = audit(
        model,
        text,
        args.target,
        compare=args.compare,
        position=position,
        methods=args.methods,
        top_k=args.top_k,
        top_heads=args.top_heads,
        corpus=args.corpus,
        seed=args.seed,
        n_steps=args.steps,
        max_steps=args.max_steps,
        calibration=args.calibration,
        command=["headmap", *args.argv],
        source=args.model,
    )
    print("\n".join(record.summary))
    for path in args.output:
        print(f"wrote {record.save(path)}", file=sys.stderr)


def run_verify(args: argparse.Namespace) -> int:
    from headmap.apps.audit import verify

    result = verify(args.record, device=args.device)
    print(result.report())
    return result.exit_code
