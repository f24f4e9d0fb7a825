"""``headmap serve``: the live dashboard in the browser (binds 127.0.0.1 unless --host says otherwise)."""

from __future__ import annotations

import argparse
import os
import sys
import time

from headmap.cli.common import add_device_args, load_options
from headmap.models import BUNDLED, DEFAULT_MODEL, SHIPPED

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
        help=f"a model to offer: bundled name ({', '.join([*BUNDLED, *SHIPPED])}), local folder (text, image "
        f"or speech model) or .gguf file; repeat for several, the first is selected (default: {DEFAULT_MODEL}; "
        "the bundled ones are always offered)",
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: %(default)s, this machine only); any other address needs "
        "--auth-file or HEADMAP_AUTH=user:password, or --open",
    )
    serve.add_argument(
        "--auth-file",
        metavar="FILE",
        help="logins, one user:password per line (the HEADMAP_AUTH environment variable may hold more)",
    )
    serve.add_argument("--auth", help=argparse.SUPPRESS)  # refused with the fix: see run()
    serve.add_argument(
        "--open",
        action="store_true",
        help="serve without authentication on an address other than loopback (everyone who can reach it)",
    )
    serve.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    serve.add_argument(
        "--max-tokens", type=int, default=4096, help="longest text the dashboard draws (default: %(default)s)"
    )
    serve.add_argument(
        "--max-text-chars",
        type=int,
        default=100_000,
        help="longest text (characters) one request may send (default: %(default)s)",
    )
    serve.add_argument(
        "--max-concurrent",
        type=int,
        default=4,
        help="requests computing at once, page and API together; others wait in the queue (default: %(default)s)",
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


def usage_error(message: str) -> None:
    """One line on stderr and exit status 2, as argparse does for a command line that cannot work."""
    print(f"headmap serve: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def access(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The logins the server asks for, after refusing a password on the command line and an open
    non-loopback address (exit 2, before any model loads)."""
    from headmap.serve.access import AUTH_ENV, credentials, exposure_problem

    if args.auth is not None:
        usage_error(
            "--auth would show the password to every user of this machine (ps, shell history): "
            f"put user:password in a file and pass --auth-file FILE, or set {AUTH_ENV}=user:password"
        )
    logins = credentials(args.auth_file, os.environ)
    problem = exposure_problem(args.host, logins, args.open)
    if problem:
        usage_error(problem)
    return logins


def run(args: argparse.Namespace) -> None:
    from headmap.errors import HeadmapError
    from headmap.serve.workbench import Workbench

    if min(args.max_tokens, args.cache_mb, args.max_text_chars, args.max_concurrent) < 1:
        raise HeadmapError(
            "--max-tokens, --max-text-chars, --max-concurrent and --cache-mb take positive numbers"
        )
    logins = access(args)
    bench = Workbench(
        args.model or [DEFAULT_MODEL],
        max_tokens=args.max_tokens,
        max_text_chars=args.max_text_chars,
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
        demo = launch(
            bench,
            host=args.host,
            port=args.port,
            block=False,
            quiet=True,
            auth=logins,
            max_concurrent=args.max_concurrent,
        )
    except OSError as exc:  # the port is taken, or the address is not this machine's
        raise HeadmapError(
            f"cannot serve on {args.host}:{args.port}: {str(exc).split('.')[0]}; choose another --port"
        ) from None
    who = f"login required ({len(logins)} user{'s' if len(logins) != 1 else ''})" if logins else "no login"
    if not logins and args.open:
        who = "no login, open to everyone who can reach it (--open)"
    print(f"headmap: serving on http://{args.host}:{args.port}, {who} (Ctrl-C stops it)", flush=True)
    # Not gradio's block_thread(): it swallows Ctrl-C, and the command would exit 0 instead of 130.
    try:
        while demo.is_running:
            time.sleep(WAIT_S)
    finally:
        demo.close()
