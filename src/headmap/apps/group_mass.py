"""Attention mass on groups of keys, summed while streaming: what the RAG check (chunks) and the bias
probe (name and evidence spans) both measure.

A text's keys are assigned to groups (:class:`KeyGroups`); :class:`GroupMass` consumes the captured
rows' blocks and keeps, per text, ``[layer, head, row, group]`` sums, so no attention map is held.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from headmap.capture import CapturePlan
from headmap.capture.recompute import Block
from headmap.result import LayerKey


@dataclass(frozen=True)
class KeyGroups:
    """Which key group every token of one text belongs to: a chunk (0..n-1), the answer (n), or none (-1)."""

    group: np.ndarray  # [key] int
    count: int  # number of groups, answer included

    def assignment(self) -> torch.Tensor:
        """``[key, group]`` one-hot float32 (keys of no group are all-zero rows)."""
        out = torch.zeros((len(self.group), self.count), dtype=torch.float32)
        inside = np.nonzero(self.group >= 0)[0]
        out[torch.from_numpy(inside), torch.from_numpy(self.group[inside])] = 1.0
        return out


class GroupMass:
    """A streaming consumer that sums every captured row's weights over key groups.

    After the stream, ``sums[item]`` is ``[layer, head, row, group]`` and ``key_mean[item]`` the
    weight each key gets, averaged over layers, heads and rows ``[key]``.
    """

    keeps_scores = False

    def __init__(self, groups: Sequence[KeyGroups]) -> None:
        self._groups = list(groups)
        self._assign = [g.assignment() for g in groups]
        self.sums: list[np.ndarray] = []
        self.key_mean: list[np.ndarray] = []
        self._layer_index: dict[LayerKey, int] = {}
        self._cells: list[int] = []  # layers x heads x rows per text: the divisor of key_mean

    def begin(self, plan: CapturePlan) -> None:
        self._layer_index = {key: i for i, key in enumerate(plan.layers)}
        rows = [len(plan.rows[item][plan.layers[0]]) for item in range(len(plan.sources))]
        shape = (len(plan.layers), len(plan.heads))
        self.sums = [np.zeros((*shape, n, g.count), dtype=np.float32) for n, g in zip(rows, self._groups)]
        self.key_mean = [np.zeros(len(g.group), dtype=np.float64) for g in self._groups]
        self._cells = [shape[0] * shape[1] * n for n in rows]

    def consume(self, item: int, key: LayerKey, start: int, block: Block) -> None:
        weights = block.weights  # [head, row, width]
        width = block.width
        stop = start + weights.shape[1]
        self.sums[item][self._layer_index[key], :, start:stop] = torch.matmul(
            weights, self._assign[item][:width]
        ).numpy()
        self.key_mean[item][:width] += (
            weights.sum(dim=(0, 1), dtype=torch.float64).numpy() / self._cells[item]
        )


__all__ = ["GroupMass", "KeyGroups"]
