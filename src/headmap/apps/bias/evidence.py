"""Attention evidence per prompt: how much the answer position attends to the name and to the evidence.

For every prompt, layer and head: the weight the answer position's row puts on the name's tokens
(summed over them; a name of three tokens gets the sum of three weights), on the evidence
phrase's tokens, and on the prompt's first token (position 0, where decoders put much of every
head's attention as a sink: when the name is the first token, that weight is part of the name's).
Outputs without an answer position (the cosine of a mean-pooled embedding) read every row, so there the sums are averaged over all rows, special tokens included, as the pooling
includes them.

Only the answer rows are captured (all rows where there is none), and each block is reduced to
the two span sums as it arrives (:class:`headmap.apps.group_mass.GroupMass`): no map is held.
Prompts are streamed in batches of those that share one row index counted from the end (all of
them, for decoders).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from headmap.apps.bias.pairs import BiasPrompt
from headmap.apps.group_mass import GroupMass, KeyGroups
from headmap.capture import CapturePlan, stream
from headmap.capture.plan import LayerSpec
from headmap.models import LoadedModel

NAME, EVIDENCE, FIRST = 0, 1, 2


@dataclass(frozen=True)
class SpanAttention:
    """``name``, ``evidence`` and ``first`` (the weight on position 0) ``[prompt, layer, head]`` float64,
    and the layers and heads they cover."""

    name: np.ndarray
    evidence: np.ndarray
    first: np.ndarray
    layers: tuple[str, ...]
    heads: tuple[int, ...]


def key_groups(prompt: BiasPrompt) -> KeyGroups:
    """Every token of the prompt: the name (0), the evidence (1), the first token (2) or none (-1).

    The first token is its own group even inside the name or the evidence (groups do not overlap):
    :func:`span_attention` adds it back to the span it belongs to.
    """
    group = np.full(len(prompt), -1, dtype=np.int64)
    group[list(prompt.name_tokens)] = NAME
    group[list(prompt.evidence_tokens)] = EVIDENCE
    group[0] = FIRST
    return KeyGroups(group, 3)


def span_attention(
    loaded: LoadedModel,
    prompts: Sequence[BiasPrompt],
    positions: Sequence[int | None],
    layers: LayerSpec | Sequence[LayerSpec] | None = None,
    heads: int | Sequence[int] | None = None,
    batch_size: int = 8,
    tick: Callable[[int], None] | None = None,
) -> SpanAttention:
    """Span sums of every prompt's answer row (or the mean over its rows where ``positions`` is None)."""
    # Row specs shared by a batch: the answer row counted from the end (-1 for decoders), or all rows.
    specs = [None if pos is None else pos - len(p) for p, pos in zip(prompts, positions)]
    name: list[np.ndarray | None] = [None] * len(prompts)
    evidence: list[np.ndarray | None] = [None] * len(prompts)
    on_first: list[np.ndarray | None] = [None] * len(prompts)
    plan: CapturePlan | None = None
    step = max(1, batch_size)
    for spec in dict.fromkeys(specs):
        members = [i for i, s in enumerate(specs) if s == spec]
        for first in range(0, len(members), step):
            batch = members[first : first + step]
            collected = GroupMass([key_groups(prompts[i]) for i in batch])
            plan = stream(
                loaded,
                [prompts[i].encoded for i in batch],
                collected,
                layers=layers,
                heads=heads,
                rows=None if spec is None else [spec],
                batch_size=len(batch),
            )
            for item, i in enumerate(batch):
                sums = (
                    collected.sums[item].astype(np.float64).mean(axis=2)
                )  # [layer, head, group]: mean over rows
                weight = on_first[i] = sums[..., FIRST]
                name[i] = sums[..., NAME] + (weight if 0 in prompts[i].name_tokens else 0.0)
                evidence[i] = sums[..., EVIDENCE] + (weight if 0 in prompts[i].evidence_tokens else 0.0)
            if tick is not None:
                tick(len(batch))
    assert plan is not None
    return SpanAttention(
        np.stack(name),  # type: ignore[arg-type]  # every slot is filled by the loop above
        np.stack(evidence),  # type: ignore[arg-type]  # likewise
        np.stack(on_first),  # type: ignore[arg-type]  # likewise
        tuple(k.name for k in plan.layers),
        tuple(plan.heads),
    )
