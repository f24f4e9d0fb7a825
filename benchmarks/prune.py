"""Latency and size of physically pruned models against the unpruned ones, in one run.

    python benchmarks/prune.py                 # both bundled models, 30% and 50% of heads, 128 and 512 tokens
    python benchmarks/prune.py --quick         # a small check of the script itself
    python benchmarks/prune.py --write         # also rewrite the table in benchmarks/README.md

Heads are removed in a random order (numpy default_rng(0), one head kept per layer): latency
depends on how many heads go, not on which. For each size, the unpruned and the cut model run the
same input (the held-out corpus repeated to N tokens, batch 1) alternately, after one warm-up each;
the table gives the median of the repeats. On a shared machine the medians move between runs: read
the ratio, measured side by side, rather than the absolute times.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from common import write_block

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import headmap  # noqa: E402
from headmap.apps.prune import prune_heads  # noqa: E402
from headmap.apps.prune.order import random_order  # noqa: E402
from headmap.apps.prune.physical import layer_keys, parameter_count  # noqa: E402
from headmap.capture.discovery import discover  # noqa: E402


def _input(loaded: headmap.LoadedModel, tokens: int) -> dict[str, torch.Tensor]:
    text = " ".join((ROOT / "corpora" / "heldout.txt").read_text(encoding="utf-8").split("\n"))
    ids = loaded.tokenizer(text)["input_ids"]  # type: ignore[operator]
    ids = (ids * (tokens // len(ids) + 1))[:tokens]
    ids_t = torch.tensor([ids])
    return {"input_ids": ids_t, "attention_mask": torch.ones_like(ids_t)}


def _time(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        model(**inputs)
    return time.perf_counter() - start


def measure(name: str, amounts: list[float], sizes: list[int], repeats: int) -> list[dict]:
    loaded = headmap.load(name)
    keys = layer_keys(loaded.model)
    per_layer = {k: discover(loaded.model).num_heads for k in keys}
    order = random_order(per_layer, seed=0)
    total = sum(per_layer.values())
    rows = []
    for amount in amounts:
        removed = order.heads[: round(amount * total)]
        heads: dict = {}
        for key, head in removed:
            heads.setdefault(key, []).append(head)
        cut = prune_heads(loaded, heads)
        for size in sizes:
            if loaded.max_positions is not None and size > loaded.max_positions:
                continue
            inputs = _input(loaded, size)
            _time(loaded.model, inputs), _time(cut.model, inputs)
            before, after = [], []
            for _ in range(repeats):
                before.append(_time(loaded.model, inputs))
                after.append(_time(cut.model, inputs))
            rows.append(
                {
                    "model": name,
                    "removed": f"{len(removed)}/{total}",
                    "tokens": size,
                    "params_before": parameter_count(loaded.model),
                    "params_after": parameter_count(cut.model),
                    "ms_before": 1e3 * statistics.median(before),
                    "ms_after": 1e3 * statistics.median(after),
                }
            )
            print(rows[-1], flush=True)
    return rows


def table(rows: list[dict], repeats: int) -> str:
    lines = [
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads; batch 1; median of {repeats} "
        "forwards per model, the two models alternating.",
        "",
        "| model | heads removed | N | parameters | unpruned (ms) | cut (ms) | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['removed']} | {r['tokens']} | {r['params_before'] / 1e6:.1f}M -> "
            f"{r['params_after'] / 1e6:.1f}M | {r['ms_before']:.1f} | {r['ms_after']:.1f} | "
            f"{r['ms_before'] / r['ms_after']:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm,smollm2")
    parser.add_argument("--amounts", default="0.3,0.5")
    parser.add_argument("--tokens", default="128,512")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--quick", action="store_true", help="one model, one size, two repeats: checks the script"
    )
    parser.add_argument("--write", action="store_true", help="rewrite the table in benchmarks/README.md")
    args = parser.parse_args()
    models, amounts = args.models.split(","), [float(a) for a in args.amounts.split(",")]
    sizes, repeats = [int(n) for n in args.tokens.split(",")], args.repeats
    if args.quick:
        models, amounts, sizes, repeats = ["minilm"], [0.3], [32], 2
    rows = [row for name in models for row in measure(name, amounts, sizes, repeats)]
    text = table(rows, repeats)
    print(text)
    if args.write:
        write_block("prune", text)


if __name__ == "__main__":
    main()
