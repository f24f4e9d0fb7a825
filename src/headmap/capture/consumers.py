"""Consumers receive attention blocks as the capture computes them; :class:`MapStore` keeps maps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from headmap.capture.moments import RowMoments
from headmap.capture.plan import CapturePlan
from headmap.capture.recompute import Block
from headmap.result import AttentionResult, LayerKey, LayerMap


class Consumer(Protocol):
    """Receives attention blocks as they are computed."""

    def begin(self, plan: CapturePlan) -> None:
        """Called once before the first block."""

    keeps_scores: bool
    """True if the consumer reads :attr:`Block.scores` (costs memory; off for plain map storage)."""

    def consume(self, item: int, key: LayerKey, start: int, block: Block) -> object:
        """``block`` covers rows ``plan.rows[item][key][start : start + len(block.rows)]``; it is on the
        host, unless the consumer has a true ``reduces_on_device`` attribute (then on the layer's
        device, its ``rows`` on the host): statistics reduce a GPU's blocks there."""


class MomentConsumer(Consumer, Protocol):
    """A consumer that can take per-row moments from the fused kernel instead of weight blocks.

    Where ``wants_moments`` is True and a layer can be fused (see :func:`headmap.capture.fused.fusable`)
    the engine calls :meth:`consume_moments` for it; other layers still arrive as blocks.
    """

    wants_moments: bool

    def key_cells(self, item: int, key: LayerKey) -> tuple[int, int] | None:
        """``(keys per cell, cells)`` of the pooled overview wanted for this layer, or None."""

    def consume_moments(
        self, item: int, key: LayerKey, plan_index: torch.Tensor, moments: RowMoments
    ) -> None:
        """``moments`` of the rows ``plan.rows[item][key][i]`` for ``i`` in ``plan_index``."""


@dataclass
class MapStore:
    """The default consumer: keeps every block, giving ``[head, row, key]`` arrays per text and layer."""

    plan: CapturePlan | None = None
    maps: dict[tuple[int, LayerKey], np.ndarray] = field(default_factory=dict)
    keeps_scores: bool = False

    def begin(self, plan: CapturePlan) -> None:
        self.plan, self.maps = plan, {}

    def consume(self, item: int, key: LayerKey, start: int, block: Block) -> None:
        assert self.plan is not None
        out = self.maps.get((item, key))
        if out is None:
            shape = (
                len(self.plan.heads_of(key)),
                len(self.plan.rows[item][key]),
                len(self.plan.key_tokens(item, key)),
            )
            out = self.maps[(item, key)] = np.zeros(shape, dtype=np.float32)
        out[:, start : start + len(block.rows), : block.width] = block.weights.numpy()

    def results(self) -> list[AttentionResult]:
        assert self.plan is not None
        plan = self.plan
        return [
            AttentionResult(
                model=plan.model,
                source=plan.sources[item],
                target=plan.targets[item],
                layers=tuple(
                    LayerMap(key, plan.heads_of(key), plan.rows[item][key], self.maps[(item, key)])
                    for key in plan.layers
                ),
                num_layers=plan.num_layers,
                num_heads=plan.num_heads,
                notes=plan.notes,
            )
            for item in range(len(plan.sources))
        ]
