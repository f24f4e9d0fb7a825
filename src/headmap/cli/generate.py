"""``headmap generate``: generate from a prompt and show, token by token, where each generated token
looked in the prompt beside what each prompt word did to it (occlusion)."""

from __future__ import annotations

import argparse
import sys

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
from headmap.models import BUNDLED

#: The default model here is the bundled decoder: the default model (minilm) does not generate.
GENERATOR = "smollm2"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "generate",
        help="generate from a prompt; per generated token, its attention to the prompt beside occlusion",
        description="Generate greedily (or sampled with --temperature and --seed) and show for every "
        "generated token where it looked in the prompt (the mean over --layer and --head) beside each prompt "
        "word's causal effect on it (occlusion: the drop of the token's log-probability without the word), "
        "and their rank agreement. Attention is correlation, not causation.",
    )
    parser.add_argument("prompt", help="the prompt, a path to a UTF-8 text file, or - for stdin")
    parser.add_argument(
        "--model",
        "-m",
        default=GENERATOR,
        help=f"a decoder: bundled name ({', '.join(BUNDLED)}; default %(default)s), local folder, .gguf file or hub id",
    )
    parser.add_argument(
        "--max-new-tokens", "-n", type=int, default=20, help="tokens to generate (default: %(default)s)"
    )
    parser.add_argument(
        "--temperature", type=float, default=None, help="sample at this temperature (default: greedy)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the sampling seed (default: %(default)s)")
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    parser.add_argument(
        "--layer", "-l", default="-1", help="layer(s) whose attention is shown (default: the last)"
    )
    parser.add_argument(
        "--head", default="all", help="head number(s), comma-separated, or 'all' (default; averaged)"
    )
    parser.add_argument(
        "--no-occlusion",
        action="store_true",
        help="skip the causal side (it costs one forward per prompt word)",
    )
    add_outputs(parser, "the report: .html, .png, .svg, .pdf, .json or .parquet")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow model code from the model folder (off by default)",
    )
    add_device_args(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from headmap.attribution.generation_report import explain_generation
    from headmap.render.report import COMMON, Format

    check_outputs(args.output, [fmt.value for fmt in (*COMMON, Format.PARQUET)])
    if args.max_new_tokens < 1:
        raise HeadmapError("--max-new-tokens must be at least 1")
    if args.temperature is not None and args.temperature <= 0:
        raise HeadmapError("--temperature must be above 0 (leave it out for greedy decoding)")
    prompt = read_text(args.prompt)
    model = load_model(args)
    layers = [v if "." in v else int_arg(v, "--layer") for v in args.layer.split(",")]
    report = explain_generation(
        model,
        prompt,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
        chat=args.chat,
        layers=layers,
        heads=parse_heads(args.head),
        occlusion=not args.no_occlusion,
    )
    print(report.summary())
    print(report.token_table().to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    for path in args.output:
        print(f"wrote {report.save(path)}", file=sys.stderr)
