"""``headmap faithfulness``: do the methods' top units move the output when removed? (and the needle test)"""

from __future__ import annotations

import argparse
import sys

from headmap.cli.common import add_device_args, add_outputs, check_outputs, load_model, read_text
from headmap.cli.explain import METHODS
from headmap.errors import HeadmapError
from headmap.models import BUNDLED, DEFAULT_MODEL

#: The faithfulness defaults, written out because --help must answer without importing torch;
#: tests/test_faithfulness.py keeps them equal to ``headmap.attribution``'s.
DEFAULT_METHODS = ("attention", "input_x_gradient", "occlusion")
UNITS = ("words", "sentences", "tokens")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "faithfulness",
        help="deletion/insertion curves, AOPC, comprehensiveness, sufficiency and agreement with occlusion",
        description="Measure how faithful attribution methods are: remove (or keep only) the units each "
        "method ranks first and see how far the explained output moves, over one or many texts, with "
        "95%% bootstrap intervals; or run the needle test (--needle). Attention is correlation, not causation.",
    )
    p.add_argument(
        "texts",
        help="one text per line: a UTF-8 file, - for stdin, or the text itself (one text)",
    )
    p.add_argument(
        "--model",
        "-m",
        default=DEFAULT_MODEL,
        help=f"bundled name ({', '.join(BUNDLED)}), local model folder, .gguf file or hub id",
    )
    p.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated, from {', '.join(METHODS)} (default: %(default)s)",
    )
    p.add_argument(
        "--units", choices=UNITS, default="words", help="what is ranked and removed (default: %(default)s)"
    )
    p.add_argument("--target", "-t", help="explained token (default: the model's top token)")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--compare", "-c", help="explain the cosine similarity with this text (encoders such as minilm)"
    )
    which.add_argument(
        "--compare-self",
        action="store_true",
        help="encoders: explain each text's cosine with its own unablated embedding (what makes the embedding)",
    )
    p.add_argument("--limit", type=int, default=None, help="use at most this many texts")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random baseline and bootstrap")
    p.add_argument(
        "--calibration",
        default=None,
        metavar="FILE",
        help="head weights from `headmap calibrate` (method calibrated)",
    )
    p.add_argument(
        "--needle",
        default=None,
        metavar="SIZES",
        help="run the needle test instead, at these token budgets (e.g. 1000,4000,8000); the texts "
        "argument is then ignored (give -). Default methods there: attention",
    )
    add_outputs(p, "the report: .json, .html, .png, .svg or .pdf (needle: .json)")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow model code from the model folder (off by default)",
    )
    add_device_args(p)
    p.set_defaults(run=run)


def _texts(value: str, limit: int | None) -> list[str]:
    text = read_text(value)
    texts = [line.strip() for line in text.splitlines() if line.strip()]
    return texts[:limit] if limit is not None else texts


def _needle(args: argparse.Namespace) -> None:
    import json

    from headmap.attribution.needle import needle_test

    check_outputs(args.output, [".json"])
    try:
        sizes = [int(s) for s in args.needle.split(",") if s.strip()]
    except ValueError as exc:
        raise HeadmapError(f"--needle takes token budgets such as 1000,4000: {exc}") from exc
    methods = "attention" if args.methods == ",".join(DEFAULT_METHODS) else args.methods
    records = needle_test(load_model(args), sizes, methods, seed=args.seed, target=args.target)
    print(f"{'size':>6} {'tokens':>6} {'method':<22} {'mass on needle':>14} {'top-1':>6}")
    for r in records:
        print(f"{r['size']:>6} {r['tokens']:>6} {r['method']:<22} {r['mass']:>14.3f} {str(r['top1']):>6}")
    for path in args.output:
        path.write_text(json.dumps(records, indent=1), encoding="utf-8")
        print(f"wrote {path}", file=sys.stderr)


def run(args: argparse.Namespace) -> None:
    if args.needle:
        _needle(args)
        return
    from headmap.attribution.faithfulness_report import METRICS, faithfulness
    from headmap.render.report import COMMON, format_number

    check_outputs(args.output, [fmt.value for fmt in COMMON])
    if args.bootstrap < 1:
        raise HeadmapError("--bootstrap must be at least 1")
    texts = _texts(args.texts, args.limit)
    report = faithfulness(
        load_model(args),
        texts,
        args.methods,
        units=args.units,
        target=args.target,
        compare=texts if args.compare_self else args.compare,
        seed=args.seed,
        n_boot=args.bootstrap,
        progress=sys.stderr.isatty(),
        calibration=args.calibration,
    )
    print(f"{report.model}: {len(texts)} text(s), units {report.units}; mean [95% bootstrap interval]")
    for method, s in report.summary().items():
        print(f"  {method}")
        for k in METRICS:
            mean, low, high = s[k]
            print(f"    {k:<18} {format_number(mean)} [{format_number(low)}, {format_number(high)}]")
    print("# higher AOPC and comprehensiveness, lower sufficiency: more faithful; random_aopc is the floor")
    for path in args.output:
        print(f"wrote {report.save(path)}", file=sys.stderr)
