"""``headmap calibrate``: learn calibrated attention's per-head weights from ablations (AT2-style)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from headmap.cli.common import add_device_args, load_model
from headmap.errors import HeadmapError
from headmap.models import BUNDLED, DEFAULT_MODEL


def add_parsers(sub: argparse._SubParsersAction) -> None:
    cal = sub.add_parser(
        "calibrate",
        help="learn one non-negative weight per head from ablations: calibrated attention (AT2)",
        description="Sample random word ablations of each corpus text, measure the drop of the log-probability "
        "of the model's top next token (models without an LM head: of the cosine with a compare text), and fit "
        "non-negative per-(layer, head) weights so that the weighted attention predicts the drops. Writes a "
        "safetensors file for `headmap explain --calibration`. "
        "With --rag the corpus is RAG examples and the units are their chunks: the target is the given "
        "answer's summed teacher-forced log-probability and the features the answer rows' attention on "
        "each chunk, exactly what `headmap rag --calibration` weights.",
    )
    cal.add_argument(
        "--model",
        "-m",
        default=DEFAULT_MODEL,
        help=f"bundled name ({', '.join(BUNDLED)}), local model folder, .gguf file or hub id",
    )
    cal.add_argument(
        "--corpus",
        required=True,
        help="a .txt file (one text a line), a .jsonl file or a folder of .txt files; with --rag a .jsonl "
        'file of {"question": ..., "chunks": [...], "answer": ...} lines',
    )
    cal.add_argument(
        "--rag",
        action="store_true",
        help="learn on RAG chunk ablations (the answer's log-probability) for `headmap rag --calibration`",
    )
    cal.add_argument("--out", "-o", required=True, type=Path, help="the weights: a .safetensors file")
    cal.add_argument(
        "--masks",
        type=int,
        default=32,
        help="random ablations per text (or RAG example) (default: %(default)s)",
    )
    cal.add_argument(
        "--keep",
        type=float,
        default=0.5,
        help="probability that an ablation keeps a word (a chunk with --rag) (default: %(default)s)",
    )
    cal.add_argument(
        "--holdout",
        type=float,
        default=0.2,
        help="share of texts (examples) held out to score the fit (default: %(default)s)",
    )
    cal.add_argument(
        "--alpha", type=float, default=0.0, help="Lasso penalty (0: non-negative least squares; default)"
    )
    cal.add_argument(
        "--seed", type=int, default=0, help="seed of the masks and the split (default: %(default)s)"
    )
    which = cal.add_mutually_exclusive_group()
    which.add_argument(
        "--compare",
        metavar="TEXT",
        default=None,
        help="models without an LM head (MiniLM): explain the cosine of each text's embedding with this text's",
    )
    which.add_argument(
        "--compare-self",
        action="store_true",
        help="models without an LM head: the cosine of each ablated text's embedding with the whole text's "
        "(what makes the embedding; the best-fitting choice on MiniLM, see benchmarks/README.md)",
    )
    which.add_argument(
        "--compare-next",
        action="store_true",
        help="models without an LM head: the cosine of each text's embedding with the next text's",
    )
    cal.add_argument("--max-texts", type=int, default=None, help="read at most this many texts (examples)")
    cal.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow model code from the model folder (off by default)",
    )
    add_device_args(cal)
    cal.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from headmap.analysis.corpus import read_corpus
    from headmap.apps.rag.calibrate import calibrate_rag, read_examples
    from headmap.attribution.calibrate import calibrate, next_texts

    if args.out.suffix != ".safetensors":
        raise HeadmapError(f"--out must end in .safetensors, not {args.out.name!r}")
    settings = {"keep": args.keep, "holdout": args.holdout, "alpha": args.alpha, "seed": args.seed}
    if args.rag:
        if args.compare or args.compare_self or args.compare_next:
            raise HeadmapError(
                "--rag explains the answer's log-probability: drop --compare/--compare-self/--compare-next"
            )
        examples = read_examples(args.corpus, args.max_texts)  # fails before the model loads
        model = load_model(args)
        calibration = calibrate_rag(
            model, examples, ablations=args.masks, progress=sys.stderr.isatty(), **settings
        )
    else:
        texts = [t.text for t in read_corpus(args.corpus, args.max_texts)]  # fails before the model loads
        model = load_model(args)
        compare = next_texts(texts) if args.compare_next else texts if args.compare_self else args.compare
        calibration = calibrate(
            model, texts, masks=args.masks, compare=compare, progress=sys.stderr.isatty(), **settings
        )
    print(f"{model.name}: {calibration.weights.shape[0]} layers x {calibration.weights.shape[1]} heads")
    print(f"held-out: {json.dumps(calibration.meta.get('heldout'))}")
    print(f"wrote {calibration.save(args.out)}", file=sys.stderr)
