"""Occlusion, the causal reference: the change of the explained output when tokens are removed.

A unit's score is ``F(text) - F(text without the unit's tokens)``: positive when the unit supports
the output. Words (headmap's word grouping) are removed whole, so a word's score is measured, not
the sum of its tokens' scores; token scores remove one token each. The tokens are taken out of the
input ids (no re-tokenization) and the variants run in padded batches without gradients.

Where the explained output sits at a position (a next token, a [MASK]), that position moves left
by the number of removed tokens before it; removing the word that holds a decoder's explained
position explains the next token after the shortened text. Not measured (NaN): special tokens
(the frame of the input), the explained [MASK] itself, and a removal that leaves nothing before a
decoder's explained position. Units wholly after a decoder's explained position score exactly 0:
a causal model's output there cannot see them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from headmap.attribution.base import Attribution, Problem
from headmap.attribution.target import ModelInputs
from headmap.capture.encoding import pad_batch, pad_token_id


def without(problem: Problem, removed: Sequence[int]) -> tuple[list[int], int] | None:
    """The ids without ``removed`` and the explained position in them, or None when not measured."""
    gone = set(removed)
    position = problem.position
    if any(problem.tokens.special[i] for i in gone):
        return None
    if problem.target.kind == "masked-token" and position in gone:
        return None
    ids = [t for i, t in enumerate(problem.ids) if i not in gone]
    if not ids:
        return None
    if problem.target.position is None:
        return ids, len(ids) - 1
    moved = position - sum(1 for i in gone if i <= position)
    return (ids, moved) if moved >= 0 else None


def occlusion_scores(
    problem: Problem, units: Sequence[Sequence[int]], output: float, batch_size: int = 16
) -> np.ndarray:
    """``[unit]``: ``output - F(text without the unit)`` for every unit (a group of token indices)."""
    scores = np.full(len(units), np.nan)
    todo: list[tuple[int, list[int], int]] = []
    for u, unit in enumerate(units):
        if problem.target.causal and problem.target.position is not None and min(unit) > problem.position:
            scores[u] = 0.0
            continue
        variant = without(problem, unit)
        if variant is not None:
            todo.append((u, *variant))
    pad = pad_token_id(problem.loaded.tokenizer)
    device = problem.device
    for first in range(0, len(todo), max(1, batch_size)):
        chunk = todo[first : first + max(1, batch_size)]
        ids, mask, _ = pad_batch([ids for _, ids, _ in chunk], pad, "right")
        inputs = ModelInputs(
            ids.to(device),
            mask.to(device),
            torch.tensor([p for _, _, p in chunk], dtype=torch.long, device=device),
        )
        with torch.inference_mode():
            values = problem.target.score(problem.loaded.model, inputs).double().cpu().numpy()
        for (u, _, _), value in zip(chunk, values):
            scores[u] = output - value
    return scores


@dataclass(frozen=True)
class Occlusion:
    """Leave-one-out scores for every token and, measured separately, for every word."""

    batch_size: int = 16
    name: str = "occlusion"

    def attribute(self, problem: Problem) -> Attribution:
        output = problem.output()
        tokens = occlusion_scores(problem, [(i,) for i in range(problem.n)], output, self.batch_size)
        words = occlusion_scores(problem, problem.groups, output, self.batch_size)
        return Attribution(
            self.name,
            tokens,
            signed=True,
            words=words,
            info={
                "output": output,
                "removal": "tokens taken out of the input ids; a word's score removes the whole word",
            },
        )
