"""``headmap serve``: the live dashboard in the browser (binds 127.0.0.1 unless --host says otherwise)."""

from __future__ import annotations

import argparse
import time

from headmap.cli.common import add_device_args, load_options
from headmap.models import BUNDLED, DEFAULT_MODEL

#: How often the waiting main thread wakes up to see whether the server still runs (seconds).
WAIT_S = 0.1


def add_parsers(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser(
        "serve",
        help="live dashboard: type a text, move the layer and head sliders, hover for values",
        description="Start the headmap dashboard. Attention is correlation, not causation.",
    )
    serve.add_argument(
        "--model",
        "-m",
        action="append",
        default=None,
        help=f"a model to offer: bundled name ({', '.join(BUNDLED)}), local folder or .gguf file; "
        f"repeat for several, the first is selected (default: {DEFAULT_MODEL}; the bundled ones are always offered)",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)"
    )
    serve.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    serve.add_argument(
        "--max-tokens", type=int, default=4096, help="longest text the dashboard draws (default: %(default)s)"
    )
    serve.add_argument(
        "--cache-mb",
        type=int,
        default=1024,
        help="memory for cached captures and maps (default: %(default)s)",
    )
    serve.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow model code from model folders (off by default)",
    )
    serve.add_argument(
        "--calibration",
        action="append",
        default=[],
        metavar="MODEL=FILE",
        help="head weights from `headmap calibrate` for MODEL (repeat per model): the explanation view's "
        "calibrated method and the RAG view's learned-weights row",
    )
    add_device_args(serve)
    serve.set_defaults(run=run)


def _calibrations(values: list[str]) -> dict[str, str]:
    from headmap.errors import HeadmapError

    found = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise HeadmapError(
                f"--calibration takes MODEL=FILE (e.g. smollm2=weights.safetensors), not {value!r}"
            )
        found[name] = path
    return found


def run(args: argparse.Namespace) -> None:
    from headmap.errors import HeadmapError
    from headmap.serve.workbench import Workbench

    if args.max_tokens < 1 or args.cache_mb < 1:
        raise HeadmapError("--max-tokens and --cache-mb take positive numbers")
    bench = Workbench(
        args.model or [DEFAULT_MODEL],
        max_tokens=args.max_tokens,
        cache_bytes=args.cache_mb << 20,
        trust_remote_code=args.trust_remote_code,
        load_options=load_options(args),
        calibrations=_calibrations(args.calibration),
    )
    bench.info(
        bench.default_model
    )  # load the first model now: a bad one fails here, before the server starts
    try:
        from headmap.serve.app import launch
    except ImportError as exc:
        raise HeadmapError(
            f"headmap serve needs gradio ({exc}): pip install '.[serve]' in a clone of headmap"
        ) from None

    try:
        demo = launch(bench, host=args.host, port=args.port, block=False, quiet=True)
    except OSError as exc:  # the port is taken, or the address is not this machine's
        raise HeadmapError(
            f"cannot serve on {args.host}:{args.port}: {str(exc).split('.')[0]}; choose another --port"
        ) from None
    print(f"headmap: serving on http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    # Not gradio's block_thread(): it swallows Ctrl-C, and the command would exit 0 instead of 130.
    try:
        while demo.is_running:
            time.sleep(WAIT_S)
    finally:
        demo.close()
