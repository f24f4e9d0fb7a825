"""``headmap bias``: counterfactual name pairs, paired statistics, attention on name vs evidence, causal check."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from headmap.cli.common import (
    add_device_args,
    add_outputs,
    check_outputs,
    load_model,
    parse_heads,
    parse_layers,
    read_text,
)
from headmap.errors import HeadmapError
from headmap.models import BUNDLED


def add_parsers(sub: argparse._SubParsersAction) -> None:
    bias = sub.add_parser(
        "bias",
        help="bias probe: the same template with names of two groups, paired statistics and a causal check",
        description="Fill the template with every name of two groups, compare the model's output between "
        "counterfactual pairs (paired t-test, Wilcoxon, Cohen's d_z, bootstrap CI), measure per head the attention "
        "from the answer position to the name and to the evidence (Benjamini-Hochberg across heads), and ablate the "
        "k heads that attend most to the name to see whether the group gap moves. Attention is correlation, not "
        "causation: the ablation is the causal check. One template is a probe, not a bias audit.",
    )
    bias.add_argument(
        "--template",
        "-t",
        required=True,
        help="text with a {name} slot, or a path to a UTF-8 file holding it (its final newline dropped)",
    )
    bias.add_argument(
        "--group",
        "-g",
        action="append",
        default=[],
        metavar="LABEL=FILE",
        required=True,
        help="a group: its label and a .txt file of names, one per line (give exactly two)",
    )
    bias.add_argument(
        "--evidence",
        "-e",
        required=True,
        help="the phrase of the template the decision should rest on (occurring there exactly once)",
    )
    out = bias.add_mutually_exclusive_group()
    out.add_argument("--target", help="decoders: the token whose log-probability is compared, e.g. ' Yes'")
    out.add_argument(
        "--compare", help="encoders: compare the cosine of the prompt's embedding with this text's"
    )
    bias.add_argument(
        "--model",
        "-m",
        default="smollm2",
        help=f"bundled name ({', '.join(BUNDLED)}), local folder, .gguf file or hub id "
        "(default: %(default)s)",
    )
    bias.add_argument(
        "--chat", action="store_true", help="put the filled template in the model's chat template"
    )
    bias.add_argument(
        "--pairs",
        default="all",
        help="'all' (every A name with every B name, the default) or a number of pairs drawn with "
        "--seed (one-to-one, each name once, while it is at most the smaller group's size)",
    )
    bias.add_argument(
        "--k", type=int, default=5, help="how many top name heads to ablate (default: %(default)s)"
    )
    bias.add_argument(
        "--controls",
        type=int,
        default=3,
        help="random sets of k other heads ablated for comparison (default: %(default)s)",
    )
    bias.add_argument("--mode", choices=("zero", "mean"), default="zero", help="how heads are ablated")
    bias.add_argument(
        "--layers", default="all", help="layers to capture (and ablate from): comma-separated, or 'all'"
    )
    bias.add_argument("--heads", default="all", help="heads to capture: comma-separated, or 'all'")
    bias.add_argument("--seed", type=int, default=0, help="seed of the pair sample, bootstrap and controls")
    bias.add_argument(
        "--resamples", type=int, default=10_000, help="bootstrap resamples (default: %(default)s)"
    )
    bias.add_argument(
        "--batch-size", type=int, default=8, help="prompts per forward pass (default: %(default)s)"
    )
    add_outputs(bias, "the report: .html, .png, .svg, .pdf or .json")
    bias.add_argument("--quiet", "-q", action="store_true", help="do not print the findings and top heads")
    bias.add_argument(
        "--trust-remote-code", action="store_true", help="allow model code from the model folder"
    )
    add_device_args(bias)
    bias.set_defaults(run=run)


def parse_groups(values: list[str]) -> dict[str, Path]:
    """``["A=a.txt", "B=b.txt"]`` -> ``{"A": Path("a.txt"), "B": Path("b.txt")}`` (exactly two, labels unique)."""
    groups: dict[str, Path] = {}
    for value in values:
        label, sep, path = value.partition("=")
        if not sep or not label.strip() or not path.strip():
            raise HeadmapError(f"--group takes LABEL=FILE, such as A=names_a.txt, not {value!r}")
        if label.strip() in groups:
            raise HeadmapError(
                f"the group label {label.strip()!r} is given twice: give each group its own label"
            )
        groups[label.strip()] = Path(path.strip())
    if len(groups) != 2:
        raise HeadmapError(
            f"give exactly two groups (--group A=names_a.txt --group B=names_b.txt), not {len(groups)}"
        )
    return groups


def parse_pairs(value: str) -> int | None:
    if value == "all":
        return None
    try:
        return int(value)
    except ValueError:
        raise HeadmapError(f"--pairs takes 'all' or a number of pairs, not {value!r}") from None


def run(args: argparse.Namespace) -> None:
    from headmap.apps.bias import bias_probe
    from headmap.render.report import COMMON

    check_outputs(args.output, [fmt.value for fmt in COMMON])
    groups = parse_groups(args.group)
    for label, path in groups.items():
        if path.suffix.lower() != ".txt":
            raise HeadmapError(
                f"group {label!r}: {path} is not a .txt file: give one name per line in a .txt file"
            )
    pairs = parse_pairs(args.pairs)
    template = read_text(args.template)
    if Path(args.template).is_file():
        template = template.rstrip("\r\n")  # the file's final newline is not part of the prompt
    model = load_model(args)
    report = bias_probe(
        model,
        template,
        groups,
        args.evidence,
        target=args.target,
        compare=args.compare,
        pairs=pairs,
        k=args.k,
        controls=args.controls,
        mode=args.mode,
        layers=parse_layers(args.layers),
        heads=parse_heads(args.heads),
        chat=args.chat,
        seed=args.seed,
        resamples=args.resamples,
        batch_size=args.batch_size,
        progress=sys.stderr.isatty(),
    )
    if not args.quiet:
        import pandas as pd

        print("\n".join(report.findings))
        top = report.table.sort_values("name_attention", ascending=False).head(report.k + 5)
        columns = [
            "name_attention",
            "sink",
            "contrast_mean",
            "contrast_ci_low",
            "contrast_ci_high",
            "contrast_t_q",
            "ablated",
        ]
        with pd.option_context("display.width", 160, "display.max_columns", None, "display.precision", 4):
            print(top[columns].to_string())
        if report.sink_heads.any():
            print(
                "sink: a first-token sink, its name attention is the weight on the prompt's first token "
                "(the name), not attention to the name"
            )
        for line in [*report.warnings, report.caveats[0]]:
            print(line)
    for path in args.output:
        print(f"wrote {report.save(path)}", file=sys.stderr)
