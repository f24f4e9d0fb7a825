"""``headmap render`` (capture and draw) and ``headmap plot`` (draw a saved capture)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from headmap.cli.common import (
    RENDER_EXTENSIONS,
    add_display_args,
    add_model_args,
    add_outputs,
    check_outputs,
    int_arg,
    load_model,
    note_paths,
    parse_heads,
    read_input,
)
from headmap.errors import HeadmapError

if TYPE_CHECKING:  # for annotations only: --help must not import what a capture needs
    from headmap.result import AttentionResult


def add_parsers(sub: argparse._SubParsersAction) -> None:
    render = sub.add_parser("render", help="draw one head, or all heads of a layer, to PNG/SVG/PDF/HTML")
    add_model_args(render, image=True)
    render.add_argument(
        "--layer",
        "-l",
        default="0",
        help="layer index (negative counts from the end) or name such as cross.2",
    )
    render.add_argument(
        "--head", default="0", help="head number, or 'all' for a grid of every head of the layer"
    )
    add_display_args(render)
    add_image_args(render)
    add_outputs(render, "the picture: .png, .svg, .pdf or .html", required=True)
    render.set_defaults(run=run_render)

    plot = sub.add_parser("plot", help="draw a map from a saved .safetensors capture")
    plot.add_argument("file", type=Path, help="a file written by 'headmap capture'")
    plot.add_argument("--layer", "-l", default="0")
    plot.add_argument("--head", default="0")
    add_display_args(plot)
    add_image_args(plot)
    add_outputs(plot, "the picture: .png, .svg, .pdf or .html", required=True)
    plot.set_defaults(run=run_plot)


def add_image_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--query",
        default="0",
        help="image results: the unit to look from, CLS (default: the first), p(2,3)...",
    )
    parser.add_argument(
        "--rollout", action="store_true", help="image results: draw the rollout over all layers from --query"
    )
    parser.add_argument(
        "--matrix",
        action="store_true",
        help="image results: draw the [query, key] heatmap, not the image; audio results: a cross layer's "
        "[token, frame] heatmap, not the time picture",
    )
    parser.add_argument(
        "--align",
        nargs="?",
        type=int,
        const=5,
        metavar="TOP",
        help="audio results: draw the mean of the TOP (default 5) alignment heads over time, words outlined",
    )


def prepare(result: AttentionResult, args: argparse.Namespace) -> AttentionResult:
    """Word view, masking and normalization, in that order, as the flags ask."""
    if args.words:
        result = result.to_words()
    if args.mask_special or args.mask_first:
        result = result.mask(special=args.mask_special, first=args.mask_first, renormalize=args.renorm_masked)
    if args.norm != "raw":
        result = result.normalize(args.norm)
    return result


def draw_alignment(result: AttentionResult, args: argparse.Namespace) -> None:
    """``--align``: the alignment heads' mean over time with the words' spans, into every output."""
    from headmap.analysis.align_result import align_result

    alignment = align_result(result, top=args.align)
    heads = ", ".join(f"{h.key.name}/{h.head}" for h in alignment.heads)
    for output in args.output:
        print(f"wrote {alignment.save(output)} (alignment: mean of {heads}; {len(alignment.words)} words)")


def draw(result: AttentionResult, args: argparse.Namespace) -> None:
    if args.align is not None:
        draw_alignment(result, args)
        return
    key = result.resolve(args.layer)
    heads = parse_heads(args.head)
    head = None if heads is None else heads[0]
    options: dict[str, object] = {"cmap": args.cmap}
    if result.source.patches is not None and not args.matrix:
        options["query"] = int(args.query) if args.query.lstrip("-").isdigit() else args.query
        options["rollout"] = args.rollout
        if args.rollout:
            head = None
    elif args.max_tokens:
        options["max_tokens"] = args.max_tokens
    if args.matrix:
        options["matrix"] = True
    for output in args.output:
        path = result.render(output, key, head, **options)
        what = "rollout" if options.get("rollout") else key.title()
        print(
            f"wrote {path} ({what}, {'all heads' if head is None else f'head {head}'}, {result.normalization})"
        )


def run_render(args: argparse.Namespace) -> None:
    from headmap.capture import capture
    from headmap.capture.discovery import discover
    from headmap.result import Stack

    check_outputs(args.output, RENDER_EXTENSIONS)
    text = read_input(args)
    if args.align is not None and (args.audio is None or args.target is None):
        raise HeadmapError("--align places a transcript in a clip: give --audio CLIP and --target TEXT")
    model = load_model(args)
    layer = args.layer if "." in args.layer else int_arg(args.layer, "--layer")
    # The rollout multiplies every layer, with every head.
    layers, heads = (None, None) if args.rollout else ([layer], parse_heads(args.head))
    if args.align is not None:
        # Alignment heads are looked for among every cross layer's heads.
        cross = discover(model.model).num_layers.get(Stack.CROSS, 0)
        layers, heads = ([f"cross.{i}" for i in range(cross)] or [layer]), None
    result = capture(model, text, layers=layers, heads=heads, target=args.target)
    assert not isinstance(result, list)  # one text in, one AttentionResult out
    note_paths(result)
    draw(prepare(result, args), args)


def run_plot(args: argparse.Namespace) -> None:
    from headmap.storage import load_result

    check_outputs(args.output, RENDER_EXTENSIONS)
    draw(prepare(load_result(args.file), args), args)
