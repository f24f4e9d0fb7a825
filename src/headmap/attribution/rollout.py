"""Attention rollout (Abnar & Zuidema 2020), from per-layer maps streamed by the capture engine.

Per layer the head-averaged map ``A`` becomes ``0.5 A + 0.5 I`` with rows renormalized (the
residual connection carries the token itself forward), and the layers are multiplied from the
first upward: ``R = aug_L @ ... @ aug_1``. The explained output reads its row(s) of ``R``. Only the
running ``[token, token]`` product and the layer being streamed are held, never every layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from headmap.attribution.base import Attribution, Problem
from headmap.capture import CapturePlan, stream
from headmap.capture.recompute import Block
from headmap.errors import HeadmapError
from headmap.result import LayerKey, Stack


def augment(attention: np.ndarray) -> np.ndarray:
    """``[query, key]`` -> ``0.5 A + 0.5 I`` with rows renormalized to sum 1."""
    aug = 0.5 * np.asarray(attention, dtype=np.float64) + 0.5 * np.eye(attention.shape[0])
    return aug / aug.sum(-1, keepdims=True)


def rollout(maps: Iterable[np.ndarray]) -> np.ndarray:
    """The rollout ``[query, key]`` of head-averaged maps given from the first layer up."""
    joint: np.ndarray | None = None
    for attention in maps:
        aug = augment(attention)
        joint = aug if joint is None else aug @ joint
    if joint is None:
        raise HeadmapError("rollout needs at least one layer")
    return joint


@dataclass
class LayerMeans:
    """A capture consumer handing each layer's head-averaged map ``[query, key]`` (float64) to
    ``on_layer`` as soon as all its rows have arrived; one text, all query rows."""

    on_layer: Callable[[LayerKey, np.ndarray], None]
    keeps_scores: bool = False
    plan: CapturePlan | None = None
    _open: dict[LayerKey, tuple[np.ndarray, int]] = field(default_factory=dict)

    def begin(self, plan: CapturePlan) -> None:
        if len(plan.sources) != 1:
            raise HeadmapError("layer means are taken over one text at a time")
        self.plan, self._open = plan, {}

    def consume(self, item: int, key: LayerKey, start: int, block: Block) -> None:
        assert self.plan is not None
        n = len(self.plan.sources[0])
        total = len(self.plan.rows[0][key])
        buffer, filled = self._open.get(key, (None, 0))
        if buffer is None:
            buffer = np.zeros((total, n))
        rows = len(block.rows)
        buffer[start : start + rows, : block.width] = block.weights.double().mean(0).numpy()
        filled += rows
        if filled == total:
            self._open.pop(key, None)
            self.on_layer(key, buffer)
        else:
            self._open[key] = (buffer, filled)


def stream_layer_means(
    problem: Problem, heads: Sequence[int] | None, on_layer: Callable[[LayerKey, np.ndarray], None]
) -> CapturePlan:
    """Stream every layer of the problem's text, all rows, the mean over ``heads`` (None: all)."""
    plan = stream(problem.loaded, problem.tokens.text, LayerMeans(on_layer), heads=heads)
    if set(plan.num_layers) != {Stack.SELF}:
        raise HeadmapError(
            "rollout and flow follow one stack of self-attention layers: "
            "encoder-decoder models are not supported"
        )
    if plan.sources[0].tokens != problem.tokens.tokens:
        raise HeadmapError("the capture tokenized the text differently from the explanation")
    return plan


@dataclass(frozen=True)
class Rollout:
    """Rollout scores: the explained row of ``R`` (the mean of all rows for pooled outputs).

    ``heads``: average over these heads of every layer (None: all heads).
    """

    heads: tuple[int, ...] | None = None
    name: str = "rollout"

    def attribute(self, problem: Problem) -> Attribution:
        joint: list[np.ndarray] = []

        def on_layer(key: LayerKey, mean: np.ndarray) -> None:
            aug = augment(mean)
            joint[:] = [aug if not joint else aug @ joint[0]]

        plan = stream_layer_means(problem, self.heads, on_layer)
        scores = problem.target.query_weights(problem.n) @ joint[0]
        heads = "all" if self.heads is None else list(plan.heads)
        return Attribution(
            self.name,
            scores,
            signed=False,
            info={
                "layers": len(plan.layers),
                "heads": heads,
                "definition": "0.5 A + 0.5 I per layer (A: head mean), rows renormalized, "
                "product from the first layer up; the explained row",
            },
        )
