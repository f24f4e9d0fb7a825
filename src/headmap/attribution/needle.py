"""The needle test: does a method put its mass on a planted fact the answer depends on?

:func:`needle_text` builds, without any download, a text of about ``budget`` tokens: seeded
generated distractor sentences, the needle (``"The secret code is 7421."``) at ``depth`` (0: the
start, 1: the end), then the question. :func:`needle_test` explains the answer's first token
(by default the model's top next token after the question) and reports per method the share of
attribution mass (absolute scores, special tokens left out) on the needle's tokens, and whether the
top sentence is the needle.

Costs (CPU, SmolLM2-135M): a forward at 8k tokens takes about 30 s. ``attention`` needs one capture
of the last layer; ``occlusion`` here removes whole sentences (one forward per sentence, batched:
~100 sentences at 1k tokens, ~800 at 8k: hours on a CPU at 8k); gradients (``input_x_gradient``)
one backward; Integrated Gradients dozens, out of reach on a CPU at 8k. Default: attention only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from headmap.attribution.attention import DEFAULT_LAYERS
from headmap.attribution.explain import build_methods, method_names, problem_for
from headmap.attribution.faithfulness import make_units, unit_scores
from headmap.attribution.occlusion import occlusion_scores
from headmap.models import LoadedModel, load

NEEDLE = "The secret code is 7421."
QUESTION = "What is the secret code?"
_SUBJECTS = (
    "The river",
    "A farmer",
    "The old bridge",
    "Our neighbour",
    "The market",
    "A small dog",
    "The train",
)
_VERBS = ("passed", "watched", "crossed", "painted", "followed", "visited", "cleaned")
_OBJECTS = (
    "the quiet valley",
    "a red barn",
    "the busy square",
    "the northern hills",
    "a wooden fence",
    "the harbour",
)
_TAILS = ("in the morning", "after the rain", "before lunch", "on a calm day", "every spring", "at dusk")


def distractor(rng: np.random.Generator) -> str:
    pick = lambda words: words[int(rng.integers(len(words)))]  # noqa: E731
    return f"{pick(_SUBJECTS)} {pick(_VERBS)} {pick(_OBJECTS)} {pick(_TAILS)}."


def needle_text(
    tokenizer: Any,
    budget: int,
    *,
    depth: float = 0.5,
    seed: int = 0,
    needle: str = NEEDLE,
    question: str = QUESTION,
) -> tuple[str, tuple[int, int]]:
    """``(text, (start, end))``: about ``budget`` tokens with ``needle`` at ``text[start:end]``."""

    def size(s: str) -> int:
        return len(tokenizer(s, add_special_tokens=False)["input_ids"])

    rng = np.random.default_rng(seed)
    room = budget - size(" " + needle) - size(" " + question) - 2
    sentences: list[str] = []
    used = 0
    while True:
        s = distractor(rng)
        cost = size(" " + s)
        if used + cost > room:
            break
        sentences.append(s)
        used += cost
    cut = int(round(depth * len(sentences)))
    before = " ".join(sentences[:cut])
    start = len(before) + (1 if before else 0)
    parts = [*sentences[:cut], needle, *sentences[cut:], question]
    text = " ".join(parts)
    return text, (start, start + len(needle))


def needle_test(
    model: LoadedModel | str,
    sizes: Sequence[int] = (1000, 4000, 8000),
    methods: str | Sequence[str] = ("attention",),
    *,
    depth: float = 0.5,
    seed: int = 0,
    target: str | int | None = None,
    batch_size: int = 8,
) -> list[dict[str, Any]]:
    """One record per size and method: ``mass`` on the needle, ``top1`` (the needle is the top sentence)."""
    loaded = load(model) if isinstance(model, str) else model
    names = method_names(methods)
    records = []
    for budget in sizes:
        text, (start, end) = needle_text(loaded.tokenizer, budget, depth=depth, seed=seed)
        problem = problem_for(loaded, text, target)
        on = np.array(
            [
                not sp and a < end and b > start
                for (a, b), sp in zip(problem.tokens.offsets, problem.tokens.special)
            ]
        )
        sentences = make_units(problem, "sentences")
        needle_unit = next(u for u, unit in enumerate(sentences) if any(on[i] for i in unit))
        for name in names:
            if name == "occlusion":
                scores = occlusion_scores(problem, sentences, problem.output(), batch_size)
                mass = abs(scores[needle_unit]) / np.nansum(np.abs(scores))
                by_sentence = scores
            else:
                (method,) = build_methods(
                    [name],
                    layers=DEFAULT_LAYERS,
                    heads=None,
                    n_steps=16,
                    max_steps=64,
                    internal_batch_size=4,
                    baseline="auto",
                    batch_size=batch_size,
                )
                attribution = method.attribute(problem)
                tokens = np.abs(np.nan_to_num(np.asarray(attribution.tokens, dtype=float)))
                tokens[np.asarray(problem.tokens.special, dtype=bool)] = 0.0
                mass = tokens[on].sum() / tokens.sum() if tokens.sum() > 0 else float("nan")
                by_sentence = unit_scores(problem, attribution, sentences)
            key = np.abs(by_sentence)
            top = int(np.nanargmax(key))
            records.append(
                {
                    "size": budget,
                    "tokens": problem.n,
                    "method": name,
                    "mass": float(mass),
                    "top1": top == needle_unit,
                    "sentences": len(sentences),
                }
            )
    return records
