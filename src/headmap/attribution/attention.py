"""Raw attention as an attribution: the explained position's row, averaged over chosen heads.

Captured through headmap's engine (the model keeps its SDPA kernel); only the query rows the
explained output reads are computed: one row for a token position, every row for a pooled output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headmap.attribution.base import Attribution, Problem
from headmap.capture import capture
from headmap.errors import HeadmapError
from headmap.result import AttentionResult

DEFAULT_LAYERS = (-1,)


def explained_row(result: AttentionResult, weights: np.ndarray) -> np.ndarray:
    """``[key]``: sum over rows of ``weights[row]`` x the mean over captured heads and layers."""
    out = np.zeros(len(result.source))
    for layer in result.layers:
        rows = np.asarray(layer.rows, dtype=np.int64)
        mean = layer.weights.astype(np.float64).mean(0)  # [row, key]
        out += weights[rows] @ mean
    return out / len(result.layers)


@dataclass(frozen=True)
class Attention:
    """Attention scores: the explained row of the mean over ``heads`` (None: all) of ``layers``
    (default: the last layer), averaged over the layers when several are given."""

    layers: tuple[int | str, ...] = DEFAULT_LAYERS
    heads: tuple[int, ...] | None = None
    name: str = "attention"

    def attribute(self, problem: Problem) -> Attribution:
        weights = problem.target.query_weights(problem.n)
        rows = [int(r) for r in np.flatnonzero(weights)]
        result = capture(
            problem.loaded, problem.tokens.text, layers=list(self.layers), heads=self.heads, rows=rows
        )
        assert isinstance(result, AttentionResult)
        if result.source.tokens != problem.tokens.tokens:
            raise HeadmapError("the capture tokenized the text differently from the explanation")
        return Attribution(
            self.name,
            explained_row(result, weights),
            signed=False,
            info={
                "layers": [k.name for k in result.keys],
                "heads": "all" if self.heads is None else list(result.layers[0].heads),
            },
        )
