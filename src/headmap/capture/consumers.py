"""Consumers receive attention blocks as the capture computes them; :class:`MapStore` keeps maps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from headmap.capture.plan import CapturePlan
from headmap.capture.recompute import Block
from headmap.result import AttentionResult, LayerKey, LayerMap


class Consumer(Protocol):
    """Receives attention blocks as they are computed."""

    def begin(self, plan: CapturePlan) -> None:
        """Called once before the first block."""

    keeps_scores: bool
    """True if the consumer reads :attr:`Block.scores` (costs memory; off for plain map storage)."""

    def consume(self, item: int, key: LayerKey, start: int, block: Block) -> None:
        """``block`` (on the host) covers rows ``plan.rows[item][key][start : start + len(block.rows)]``."""


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
            shape = (len(self.plan.heads), len(self.plan.rows[item][key]), len(self.plan.key_tokens(item, key)))
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
                    LayerMap(key, plan.heads, plan.rows[item][key], self.maps[(item, key)]) for key in plan.layers
                ),
                num_layers=plan.num_layers,
                num_heads=plan.num_heads,
                notes=plan.notes,
            )
            for item in range(len(plan.sources))
        ]


