"""The answer rows' attention on the chunks, one streamed capture: what ``rag()`` reports and what
``calibrate_rag`` learns head weights on, computed by the same code so both see the same features.

:func:`answer_evidence` streams ``prompt + answer`` (the answer teacher-forced, exact ids) capturing
only the answer rows (:func:`~headmap.apps.rag.evidence.answer_rows`) and reduces each block to chunk
sums as it arrives. :func:`chunk_features` turns that into AT2's features: per chunk, layer and head,
the mass summed over the answer tokens, so ``features . w`` is :attr:`RagReport.learned_attention`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from headmap.apps.group_mass import GroupMass
from headmap.apps.rag.evidence import answer_rows, key_groups
from headmap.apps.rag.prompt import RagPrompt, with_answer
from headmap.capture import CapturePlan, Encoded, stream
from headmap.capture.plan import LayerSpec
from headmap.models import LoadedModel


@dataclass(frozen=True)
class AnswerEvidence:
    """One capture's sums: ``mass`` ``[layer, head, answer_token, chunk]``, ``answer_mass`` ``[layer,
    head, answer_token]`` (on the answer tokens before), ``key_mean`` ``[key]`` (each key's weight,
    mean over layers, heads and answer rows), the teacher-forced text ``full`` and the ``plan``."""

    mass: np.ndarray
    answer_mass: np.ndarray
    key_mean: np.ndarray
    full: Encoded
    plan: CapturePlan


def answer_evidence(
    loaded: LoadedModel,
    prompt: RagPrompt,
    answer_ids: Sequence[int],
    *,
    layers: LayerSpec | Sequence[LayerSpec] | None = None,
    heads: int | Sequence[int] | None = None,
) -> AnswerEvidence:
    """Stream ``prompt + answer_ids`` once, keeping per answer row the weight on each chunk (module)."""
    full = with_answer(prompt, answer_ids, loaded.tokenizer)
    collected = GroupMass([key_groups(len(full.ids), prompt.chunk_tokens, len(prompt))])
    plan = stream(
        loaded,
        full,
        collected,
        layers=layers,
        heads=heads,
        rows=answer_rows(len(answer_ids)),
        batch_size=1,
    )
    sums = collected.sums[0]
    return AnswerEvidence(sums[..., :-1], sums[..., -1], collected.key_mean[0], full, plan)


def chunk_features(mass: np.ndarray) -> np.ndarray:
    """``[chunk, layer, head]`` float64 from ``mass`` ``[layer, head, answer_token, chunk]``: the sum
    over the answer tokens (AT2's features; ``features . w`` is the learned attention)."""
    return np.einsum("lhtc->clh", mass.astype(np.float64))
