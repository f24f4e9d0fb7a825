"""``headmap capture``: save raw attention weights to a .safetensors file."""

from __future__ import annotations

import argparse

from headmap.cli.common import (
    add_model_args,
    add_outputs,
    check_outputs,
    load_model,
    note_paths,
    parse_heads,
    parse_layers,
    read_input,
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    cap = sub.add_parser("capture", help="save raw attention weights to a .safetensors file")
    add_model_args(cap, image=True)
    cap.add_argument("--layers", default="all", help="comma-separated layers (indices or names), or 'all'")
    cap.add_argument("--heads", default="all", help="comma-separated heads, or 'all'")
    add_outputs(cap, "the weights: a .safetensors file", required=True)
    cap.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from headmap.capture import capture

    check_outputs(args.output, (".safetensors",))
    text = read_input(args)
    model = load_model(args)
    result = capture(
        model,
        text,
        layers=parse_layers(args.layers),
        heads=parse_heads(args.heads),
        target=args.target,
        progress=True,
    )
    assert not isinstance(result, list)  # one text in, one AttentionResult out
    note_paths(result)
    counts = sorted({len(layer.heads) for layer in result.layers})
    heads = (
        str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    )  # a pruned model's layers differ
    for output in args.output:
        path = result.save(output)
        size = path.stat().st_size / 2**20
        print(
            f"wrote {path}: {len(result.layers)} layers x {heads} heads, "
            f"{len(result.source)} {result.source.plural}, {size:.1f} MiB"
        )
