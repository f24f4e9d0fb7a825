"""The ``headmap`` command line: render, capture, demo.

Exit codes: 0 success, 1 a problem with the input (one line on stderr naming the fix), 2 a usage
error (argparse), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from headmap.errors import HeadmapError
from headmap.models import BUNDLED, DEFAULT_MODEL

RENDER_EXTENSIONS = (".png", ".svg", ".pdf", ".html")
DEMO_TEXT = "The trophy didn't fit in the suitcase because it was too big."


def read_text(value: str) -> str:
    """The argument itself, or the contents of a file when it names one ('-' reads stdin)."""
    if value == "-":
        return sys.stdin.read()
    if len(value) < 4096 and os.path.isfile(value):
        try:
            return Path(value).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise HeadmapError(f"cannot read text file {value}: {exc}") from exc
    return value


def check_output(path: Path, extensions: Sequence[str]) -> Path:
    """Fail before any model work when the output cannot be written."""
    from headmap.render import check_writable

    if path.suffix.lower() not in extensions:
        raise HeadmapError(f"unknown output extension {path.suffix or '(none)'!r} for {path}: use one of {', '.join(extensions)}")
    check_writable(path)
    return path


def _parse_heads(value: str) -> list[int] | None:
    if value == "all":
        return None
    try:
        return [int(v) for v in value.split(",")]
    except ValueError:
        raise HeadmapError(f"--head takes a number, a comma-separated list, or 'all', not {value!r}") from None


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help="the input text, a path to a UTF-8 text file, or - for stdin")
    parser.add_argument("--model", "-m", default=DEFAULT_MODEL,
                        help=f"bundled name ({', '.join(BUNDLED)}), local model folder, .gguf file or hub id (default: %(default)s)")
    parser.add_argument("--target", help="decoder text for encoder-decoder models (default: the input text)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model code from the model folder (off by default)")


def _display_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--words", action="store_true", help="aggregate sub-tokens into words (sum over keys, mean over queries)")
    parser.add_argument("--norm", default="raw", help="display normalization: raw (default), topk:K, window:W, threshold:T, log, renorm; join with commas")
    parser.add_argument("--mask-special", action="store_true", help="hide special tokens ([CLS], [SEP], BOS, ...)")
    parser.add_argument("--mask-first", action="store_true", help="hide the first token (a common attention sink)")
    parser.add_argument("--renorm-masked", action="store_true", help="renormalize rows after masking")
    parser.add_argument("--cmap", default="viridis", help="colormap: sequential (viridis, magma, Blues) or diverging (RdBu_r)")
    parser.add_argument("--max-tokens", type=int, default=None, help="downsample (max-pool) beyond this many tokens per axis")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="headmap",
        description="Capture and draw the attention maps of Transformer models. "
        "Attention is correlation, not causation: a map shows where a head looks, not why the model decides.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    render = sub.add_parser("render", help="draw one head, or all heads of a layer, to PNG/SVG/PDF/HTML")
    _add_model_args(render)
    render.add_argument("--layer", "-l", default="0", help="layer index (negative counts from the end) or name such as cross.2")
    render.add_argument("--head", default="0", help="head number, or 'all' for a grid of every head of the layer")
    _display_args(render)
    render.add_argument("--output", "-o", required=True, type=Path, help="output file: .png, .svg, .pdf or .html")
    render.set_defaults(run=cmd_render)

    cap = sub.add_parser("capture", help="save raw attention weights to a .safetensors file")
    _add_model_args(cap)
    cap.add_argument("--layers", default="all", help="comma-separated layers (indices or names), or 'all'")
    cap.add_argument("--heads", default="all", help="comma-separated heads, or 'all'")
    cap.add_argument("--output", "-o", required=True, type=Path, help="output .safetensors file")
    cap.set_defaults(run=cmd_capture)

    plot = sub.add_parser("plot", help="draw a map from a saved .safetensors capture")
    plot.add_argument("file", type=Path, help="a file written by 'headmap capture'")
    plot.add_argument("--layer", "-l", default="0")
    plot.add_argument("--head", default="0")
    _display_args(plot)
    plot.add_argument("--output", "-o", required=True, type=Path)
    plot.set_defaults(run=cmd_plot)

    stats = sub.add_parser("stats", help="per-head statistics (entropy, distance, sinks, ...) streamed over long inputs")
    _add_model_args(stats)
    stats.add_argument("--layers", default="all", help="comma-separated layers (indices or names), or 'all'")
    stats.add_argument("--heads", default="all", help="comma-separated heads, or 'all'")
    stats.add_argument("--output", "-o", type=Path, help="also write the table: .csv, .json or .parquet")
    stats.add_argument("--quiet", "-q", action="store_true", help="do not print the table")
    stats.set_defaults(run=cmd_stats)

    demo = sub.add_parser("demo", help="render example maps of a bundled model into a folder")
    demo.add_argument("--model", "-m", default=DEFAULT_MODEL, help="model to demo (default: %(default)s)")
    demo.add_argument("--out", type=Path, default=Path("headmap-demo"), help="folder for the pictures (default: %(default)s)")
    demo.add_argument("--text", default=DEMO_TEXT)
    demo.set_defaults(run=cmd_demo)
    return parser


def _prepare(result, args):  # type: ignore[no-untyped-def]
    """Word view, masking and normalization, in that order, as the flags ask."""
    if args.words:
        result = result.to_words()
    if args.mask_special or args.mask_first:
        result = result.mask(special=args.mask_special, first=args.mask_first, renormalize=args.renorm_masked)
    if args.norm != "raw":
        result = result.normalize(args.norm)
    return result


def _render(result, args) -> None:  # type: ignore[no-untyped-def]
    key = result.resolve(args.layer)
    heads = _parse_heads(args.head)
    head = None if heads is None else heads[0]
    options = {"cmap": args.cmap}
    if args.max_tokens:
        options["max_tokens"] = args.max_tokens
    path = result.render(args.output, key, head, **options)
    print(f"wrote {path} ({key.title()}, {'all heads' if head is None else f'head {head}'}, {result.normalization})")


def cmd_render(args: argparse.Namespace) -> None:
    from headmap.capture import capture
    from headmap.models import load

    check_output(args.output, RENDER_EXTENSIONS)
    text = read_text(args.text)
    model = load(args.model, trust_remote_code=args.trust_remote_code)
    layer = args.layer if "." in args.layer else _int_arg(args.layer, "--layer")
    result = capture(model, text, layers=[layer], heads=_parse_heads(args.head), target=args.target)
    _render(_prepare(result, args), args)


def cmd_plot(args: argparse.Namespace) -> None:
    from headmap.storage import load_result

    check_output(args.output, RENDER_EXTENSIONS)
    _render(_prepare(load_result(args.file), args), args)


def cmd_capture(args: argparse.Namespace) -> None:
    from headmap.capture import capture
    from headmap.models import load

    check_output(args.output, (".safetensors",))
    text = read_text(args.text)
    model = load(args.model, trust_remote_code=args.trust_remote_code)
    result = capture(model, text, layers=_parse_layers(args.layers), heads=_parse_heads(args.heads), target=args.target, progress=True)
    path = result.save(args.output)
    size = path.stat().st_size / 2**20
    print(f"wrote {path}: {len(result.layers)} layers x {len(result.layers[0].heads)} heads, "
          f"{len(result.source)} tokens, {size:.1f} MiB")


def _parse_layers(value: str) -> list[int | str] | None:
    if value == "all":
        return None
    return [v if "." in v else _int_arg(v, "--layers") for v in value.split(",")]


def cmd_stats(args: argparse.Namespace) -> None:
    from headmap.models import load
    from headmap.stats import collect_stats
    from headmap.stats_io import STATS_EXTENSIONS

    if args.output is not None:
        check_output(args.output, STATS_EXTENSIONS)
    text = read_text(args.text)
    model = load(args.model, trust_remote_code=args.trust_remote_code)
    stats = collect_stats(model, text, layers=_parse_layers(args.layers), heads=_parse_heads(args.heads),
                          target=args.target, progress=sys.stderr.isatty() or len(text) > 2000)
    if not args.quiet:
        print(stats.format_table())
    if args.output is not None:
        print(f"wrote {stats.save(args.output)}", file=sys.stderr)


def cmd_demo(args: argparse.Namespace) -> None:
    from headmap.demo import run_demo

    for path in run_demo(args.model, args.out, args.text):
        print(f"wrote {path}")


def _int_arg(value: str, flag: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise HeadmapError(f"{flag} takes a number or a name such as layer.3, not {value!r}") from None


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
    _quiet_transformers()
    try:
        args.run(args)
    except HeadmapError as exc:
        print(f"headmap: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("headmap: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
