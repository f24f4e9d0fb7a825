"""``headmap explain``: attention beside causal evidence for one output, with their agreement."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from headmap.cli.common import (
    add_device_args,
    add_outputs,
    check_outputs,
    int_arg,
    load_model,
    parse_heads,
    read_text,
)
from headmap.errors import HeadmapError
from headmap.models import BUNDLED, DEFAULT_MODEL

if TYPE_CHECKING:  # for annotations only: --help must not import torch
    from headmap.attribution import Explanation


#: ``headmap.attribution``'s METHODS and FLOW_MAX_TOKENS, written out because --help must answer
#: without importing torch (which attribution needs); tests/test_cli_conventions.py keeps them equal.
METHODS = (
    "attention",
    "calibrated",
    "rollout",
    "flow",
    "ig",
    "attention_x_gradient",
    "input_x_gradient",
    "occlusion",
)
FLOW_MAX_TOKENS = 48


def add_parsers(sub: argparse._SubParsersAction) -> None:
    explain = sub.add_parser(
        "explain",
        help="attention, rollout, flow, Integrated Gradients and occlusion on one axis, with their agreement",
        description="Explain one output of a model with attention-based, gradient-based and causal (occlusion) "
        "methods on the same words, and measure how far they agree. Attention is correlation, not causation.",
    )
    explain.add_argument("text", help="the input text, a path to a UTF-8 text file, or - for stdin")
    explain.add_argument(
        "--model",
        "-m",
        default=DEFAULT_MODEL,
        help=f"bundled name ({', '.join(BUNDLED)}), local model folder, .gguf file or hub id",
    )
    explain.add_argument(
        "--target",
        "-t",
        help="token whose log-probability is explained (decoders: the next token after the text; "
        "masked LMs: at the [MASK]); default: the model's top token. Mind leading spaces: ' big'",
    )
    explain.add_argument(
        "--compare",
        "-c",
        help="explain the cosine similarity of the mean-pooled embedding with this text "
        "(the choice for encoders without an LM head, such as minilm)",
    )
    explain.add_argument(
        "--position",
        "-p",
        default=None,
        help="explained token (decoders: the next token after it; default the last; masked: a [MASK])",
    )
    explain.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated, from {', '.join(METHODS)} (default: all; flow only up to "
        f"{FLOW_MAX_TOKENS} tokens; calibrated only with --calibration)",
    )
    explain.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help="weights from `headmap calibrate` (a .safetensors file): enables the calibrated method",
    )
    explain.add_argument(
        "--layer",
        "-l",
        default="-1",
        help="layer(s) that attention and attention_x_gradient read (default: the last)",
    )
    explain.add_argument(
        "--head", default="all", help="head number(s), comma-separated, or 'all' (default; averaged)"
    )
    explain.add_argument(
        "--steps",
        type=int,
        default=50,
        help="Integrated Gradients steps to start from (default: %(default)s)",
    )
    explain.add_argument(
        "--max-steps",
        type=int,
        default=400,
        help="double the IG steps until |delta| <= 5%% of |F(x) - F(baseline)|, up to this (default: %(default)s)",
    )
    explain.add_argument(
        "--baseline",
        default="auto",
        help="IG baseline: auto (mask where the tokenizer has a mask token, else uniform+first), mask, pad, "
        "uniform (mean embedding row), data (mean embedding of corpora/sentences.txt), zero, or a token id; "
        "+first (e.g. pad+first) also keeps token 0 at its embedding (decoders: their attention sink)",
    )
    explain.add_argument(
        "--internal-batch-size", type=int, default=16, help="IG steps per forward pass (bounds memory)"
    )
    explain.add_argument("--tokens", action="store_true", help="show and draw tokens instead of words")
    add_outputs(explain, "the explanation: .html, .png, .svg, .pdf or .json")
    explain.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow model code from the model folder (off by default)",
    )
    add_device_args(explain)
    explain.set_defaults(run=run)


def _position(value: str | None) -> int | None:
    return None if value is None else int_arg(value, "--position")


def _layers(value: str) -> list[int | str]:
    return [v if "." in v else int_arg(v, "--layer") for v in value.split(",")]


def _baseline(value: str) -> str | int:
    return int(value) if value.lstrip("-").isdigit() else value


def summary(ex: Explanation) -> str:
    """The scores per unit and the agreement with occlusion, as plain text."""
    lines = [f"{ex.model}: {ex.target['description']} = {ex.output:.6g}"]
    table = ex.table.rename(columns={m: ex.label(m) for m in ex.methods})
    lines.append(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    causal = ex.causal_agreement()
    if not causal.empty:
        lines.append(
            f"how causal is each picture: rank agreement with occlusion over {int(causal.n.iloc[0])} {ex.unit}s"
        )
        lines.append(f"  {'method':<22} {'Spearman':>8} {'Kendall':>8} {'Spearman of |scores|':>21}")
        lines += [
            f"  {ex.label(r.method):<22} {r.spearman:>+8.2f} {r.kendall:>+8.2f} {r.spearman_abs:>+21.2f}"
            for r in causal.itertuples()
        ]
    ig, baseline = ex.info.get("ig"), ex.baseline_output  # IG records F(baseline) whenever it runs
    if ig and baseline is not None:
        verdict = "converged" if ig["converged"] else "did NOT converge"
        lines.append(
            f"IG {verdict}: delta {ig['delta']:+.3e} after {ig['steps']} steps "
            f"(F(x) - F(baseline) = {ex.output - baseline:.4g})"
        )
    lines += [f"# {note}" for note in ex.notes]
    lines.append(f"# {ex.caveats()[0]}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
    from headmap.attribution.explain import explain
    from headmap.render.report import COMMON

    check_outputs(args.output, [fmt.value for fmt in COMMON])
    if args.steps < 2 or args.max_steps < args.steps:
        raise HeadmapError("--steps must be at least 2 and --max-steps at least --steps")
    text = read_text(args.text)
    model = load_model(args)
    ex = explain(
        model,
        text,
        args.target,
        compare=args.compare,
        position=_position(args.position),
        methods=args.methods,
        layers=_layers(args.layer),
        heads=parse_heads(args.head),
        n_steps=args.steps,
        max_steps=args.max_steps,
        internal_batch_size=args.internal_batch_size,
        baseline=_baseline(args.baseline),
        calibration=args.calibration,
        progress=sys.stderr.isatty(),
    )
    if not args.tokens:
        ex = ex.to_words()
    print(summary(ex))
    for path in args.output:
        print(f"wrote {ex.save(path)}", file=sys.stderr)
