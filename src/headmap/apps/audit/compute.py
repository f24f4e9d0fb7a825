"""The numbers of an audit record beyond the explanation itself, each through headmap's own pieces.

- top alternatives: the log-softmax (float64) of the logits at the deciding position;
- faithfulness of every method (:func:`headmap.attribution.faithfulness.measure`, words);
- removing units: F(x) without the top-k words of a method's ranking (the deletion of faithfulness);
- head effects: the explained output with each head zeroed alone (:func:`headmap.ablate`), through
  the same target the explanation uses (:meth:`Target.evaluate`), then with the top heads together;
- roles of the top heads over a small reference corpus (:func:`headmap.head_report`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from headmap.analysis.ablation import ablate
from headmap.analysis.report import head_report
from headmap.analysis.roles import ROLE_ORDER
from headmap.attribution.base import Attribution, Problem
from headmap.attribution.faithfulness import make_units, measure, order, reduced_outputs, unit_scores
from headmap.attribution.occlusion import occlusion_scores
from headmap.attribution.target import _logits_at as logits_at
from headmap.capture.discovery import discover
from headmap.capture.plan import resolve_layers
from headmap.render.report import json_number, json_numbers
from headmap.result import LayerKey

#: How many alternatives the record lists at the deciding position.
ALTERNATIVES = 5
#: The statistics of a head the record shows beside its role.
ROLE_STATS = ("entropy_norm", "distance", "first_share", "special_share", "prev_share", "diag_share")
#: Why these heads: written into the record.
HEADS_CHOSEN_BY = (
    "the heads whose zeroing, one at a time, changes the explained output the most (largest |effect|): "
    "a causal test of each head on this input, not where it looks"
)


def alternatives(problem: Problem, count: int = ALTERNATIVES) -> list[dict[str, Any]]:
    """The ``count`` most likely tokens at the deciding position with their log-probabilities, or []
    when the explained output is not a token's probability (a cosine, a custom function)."""
    if problem.target.kind not in ("next-token", "masked-token"):
        return []
    with torch.inference_mode():
        # The logits the target reads (a decoder's LM head over the last positions only), in float64
        # as TokenLogProb.evaluate: the explained token's entry is exactly the record's log-probability.
        logits = logits_at(problem.loaded.model, problem.inputs())
        logprobs = torch.log_softmax(logits[0].double(), dim=-1).cpu()
    top = torch.topk(logprobs, min(count, logprobs.numel()))
    decode = problem.loaded.tokenizer.decode  # type: ignore[attr-defined]  # LoadedModel.tokenizer is typed as object (any fast tokenizer)
    return [
        {"token_id": int(i), "token": decode([int(i)]), "logprob": float(v), "prob": float(np.exp(float(v)))}
        for v, i in zip(top.values, top.indices)
    ]


def faithfulness_of(
    problem: Problem, results: Sequence[Attribution], output: float, seed: int
) -> dict[str, dict[str, Any]]:
    """``{method: {aopc, random_aopc, comprehensiveness, sufficiency, loo_spearman, deletion, ...}}``
    over the words of the text (occlusion's own leave-one-out drops are the LOO reference)."""
    units = make_units(problem, "words")
    if not units:
        return {}
    loo = occlusion_scores(problem, units, output)  # once: every method's LOO reference
    out: dict[str, dict[str, Any]] = {}
    for attribution in results:
        f = measure(problem, attribution, units, output=output, loo=loo, seed=seed)
        out[attribution.method] = {
            **{k: json_number(v) for k, v in f.summary().items()},
            "grid": list(f.grid),
            "deletion": json_numbers(f.deletion),
            "insertion": json_numbers(f.insertion),
            "random_deletion": json_numbers(f.random_deletion),
        }
    return out


def removals(problem: Problem, results: Sequence[Attribution], output: float, top_k: int) -> dict[str, Any]:
    """For each method: F(x) without its top 1..``top_k`` words, the words and the drop."""
    units = make_units(problem, "words")
    words = problem.tokens.text
    out: dict[str, Any] = {}
    for attribution in results:
        ranked = order(unit_scores(problem, attribution, units), attribution.signed)[: min(top_k, len(units))]
        removed = [[i for u in ranked[: k + 1] for i in units[u]] for k in range(len(ranked))]
        after = reduced_outputs(problem, removed, output)
        offsets = problem.tokens.offsets
        out[attribution.method] = [
            {
                "k": k + 1,
                "words": [words[offsets[units[u][0]][0] : offsets[units[u][-1]][1]] for u in ranked[: k + 1]],
                "output": json_number(after[k]),
                "drop": json_number(output - after[k]),
            }
            for k in range(len(ranked))
        ]
    return out


def layer_keys(problem: Problem) -> list[LayerKey]:
    """Every attention layer of the model, in depth order."""
    return list(resolve_layers(discover(problem.loaded.model), None))


def evaluate(problem: Problem, heads: Sequence[tuple[LayerKey, int]] = ()) -> float:
    """The explained output (float64 where the target computes it so), with ``heads`` zeroed."""
    inputs = problem.inputs()
    if not heads:
        return float(problem.target.evaluate(problem.loaded.model, inputs)[0])
    with ablate(problem.loaded, list(heads)):
        return float(problem.target.evaluate(problem.loaded.model, inputs)[0])


def head_effects(problem: Problem, top_heads: int) -> dict[str, Any]:
    """Every head zeroed alone (``effect = F(ablated) - F``), the ``top_heads`` with the largest
    |effect|, and the effect of zeroing those together."""
    arch = discover(problem.loaded.model)
    keys = layer_keys(problem)
    base = evaluate(problem)
    effects = np.full((len(keys), arch.num_heads), np.nan)
    for li, key in enumerate(keys):
        for head in range(arch.heads_in(key)):
            effects[li, head] = evaluate(problem, [(key, head)]) - base
    flat = np.where(np.isfinite(effects), np.abs(effects), -np.inf).ravel()
    ranked = np.argsort(-flat, kind="stable")[: min(top_heads, int(np.isfinite(effects).sum()))]
    top = [(keys[int(i) // arch.num_heads], int(i) % arch.num_heads) for i in ranked]
    together = evaluate(problem, top) if top else base
    return {
        "chosen_by": HEADS_CHOSEN_BY,
        "layers": [k.name for k in keys],
        "output": base,
        "effects": [json_numbers(row) for row in effects],
        "top": [
            {"layer": key.name, "head": head, "effect": json_number(effects[keys.index(key), head])}
            for key, head in top
        ],
        "together": {
            "heads": [[key.name, head] for key, head in top],
            "output": json_number(together),
            "effect": json_number(together - base),
        },
    }


def roles_of(problem: Problem, heads: list[dict[str, Any]], corpus: Sequence[str]) -> dict[str, Any]:
    """The role and statistics of each head in ``heads`` over ``corpus`` (added to those records)."""
    if not heads or not corpus:
        return {"texts": len(corpus), "descriptions": {}}
    report = head_report(problem.loaded, list(corpus), diversity=False)
    table = report.to_pandas()
    for record in heads:
        row = table[(table["layer"] == record["layer"]) & (table["head"] == record["head"])].iloc[0]
        record["role"] = str(row["role"])
        record["stats"] = {name: json_number(row[name]) for name in ROLE_STATS if name in row}
    descriptions = {role.name: role.describe() for role in ROLE_ORDER}
    return {"texts": len(corpus), "descriptions": descriptions, "notes": list(report.notes)}


__all__ = ["alternatives", "evaluate", "faithfulness_of", "head_effects", "removals", "roles_of"]
