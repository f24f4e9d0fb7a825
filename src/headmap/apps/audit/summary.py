"""The plain-language summary and caveats of a record, generated from its numbers by templates.

No language model writes these: every sentence is a fixed template filled with numbers of the
record, so the same record always reads the same, and a reviewer can trace each number back.
"""

from __future__ import annotations

import math
from typing import Any

from headmap.render.report import format_number
from headmap.result import CAUSATION_WARNING

#: How a Spearman correlation is put into words (lower bound of each band, highest first).
STRENGTH = ((0.7, "strongly"), (0.4, "moderately"), (0.1, "only weakly"), (-0.1, "hardly at all"))


def strength(rho: float | None) -> str:
    """``"strongly"``, ``"moderately"``, ``"only weakly"``, ``"hardly at all"`` or ``"in the opposite
    direction"`` for a Spearman correlation; ``"not measurably"`` when it is undefined."""
    if rho is None or not math.isfinite(rho):
        return "not measurably (too few words, or constant scores)"
    for bound, words in STRENGTH:
        if rho >= bound:
            return words
    return "in the opposite direction"


def _quote(words: list[str]) -> str:
    return ", ".join(repr(w.strip()) for w in words)


def _decision(decision: dict[str, Any]) -> str:
    target = decision["target"]
    if target.get("kind") in ("next-token", "masked-token"):
        logprob = float(decision["logprob"])
        where = "next" if target["kind"] == "next-token" else "at the [MASK]"
        text = (
            f"The model predicts {str(target.get('token', '')).strip()!r} {where} with probability "
            f"{format_number(math.exp(logprob), 2)} (log-probability {format_number(logprob, 3)})."
        )
        others = [a for a in decision.get("alternatives", []) if a["token_id"] != target.get("token_id")]
        if others:
            text += (
                f" The next most likely alternative is {str(others[0]['token']).strip()!r} "
                f"with probability {format_number(others[0]['prob'], 2)}."
            )
        return text
    return f"The explained output is the {target.get('description')}: {format_number(decision['output'], 3)}."


def _layers(names: list[str]) -> str:
    """``["layer.5"]`` -> ``"layer 5"``."""
    return ", ".join(str(n).replace(".", " ") for n in names)


def _units(decision: dict[str, Any]) -> str:
    kind = decision["target"].get("kind")
    return "log-probability" if kind in ("next-token", "masked-token") else "output"


def summary(record: dict[str, Any]) -> list[str]:
    """The summary sentences, most important first."""
    decision, causal = record["decision"], record["causal"]
    lines = [_decision(decision)]
    unit = _units(decision)
    occlusion = causal["removal"].get("occlusion")
    if occlusion:
        last = occlusion[-1]
        drop = last["drop"]
        verb = "lowers" if drop is not None and drop >= 0 else "raises"
        lines.append(
            f"Removing the {last['k']} word(s) the model relied on most by occlusion ({_quote(last['words'])}) "
            f"{verb} that {unit} by {format_number(abs(drop) if drop is not None else math.nan, 2)}."
        )
    agreement = {
        row["method"]: row for row in record.get("agreement_with_occlusion", []) if row.get("method")
    }
    layers = record["explanation"]["methods"].get("attention", {}).get("info", {}).get("layers")
    if "attention" in agreement:
        rho = agreement["attention"]["spearman_abs"]
        where = f"at {_layers(layers)} " if layers else ""
        lines.append(
            f"Attention {where}agrees with occlusion {strength(rho)} "
            f"(Spearman {format_number(rho if rho is not None else math.nan, 2)} over the words)."
        )
    best = max(
        (
            (row["spearman"], name)
            for name, row in agreement.items()
            if name != "attention" and row["spearman"] is not None
        ),
        default=None,
    )
    if best is not None:
        lines.append(
            f"Of the other methods, {best[1]} agrees best with occlusion (Spearman {format_number(best[0], 2)})."
        )
    heads = record["heads"]
    if heads["top"]:
        top = heads["top"][0]
        role = f", a {top['role']} head over the reference texts," if top.get("role") else ""
        together = heads["together"]
        lines.append(
            f"Switching off head {top['head']} of {_layers([top['layer']])}{role} changes the {unit} by "
            f"{format_number(top['effect'], 2, signed=True)}; switching off the top {len(heads['top'])} "
            f"heads together changes it by {format_number(together['effect'], 2, signed=True)}."
        )
    return lines


def caveats(record: dict[str, Any]) -> list[str]:
    """What a non-technical reader must keep in mind, then the methods' own caveats."""
    plain = [
        CAUSATION_WARNING,
        "Every score here explains this one input and this one output; it says nothing about how the "
        "model behaves on other inputs.",
        "Removing words or switching off heads gives the model inputs it never saw in training; a large "
        "change shows dependence, not a reason a person would accept.",
        "Words can matter only together; scores of single words can miss that.",
        "Head roles describe where a head looks on average over a few reference sentences, not what it "
        "does for this decision.",
    ]
    layers = record["explanation"]["methods"].get("attention", {}).get("info", {}).get("layers")
    if layers:
        plain.append(
            f"The attention shown is that of {_layers(layers)} only (layers are counted from 0, the one "
            "nearest the input); other layers may look elsewhere."
        )
    return [*plain, *record["explanation"].get("caveats", [])[1:]]


__all__ = ["caveats", "strength", "summary"]
