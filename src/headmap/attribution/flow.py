"""Attention flow (Abnar & Zuidema 2020): max-flow through the layered graph of attention.

Nodes are ``(layer, token)`` for layer 0 (the input) to L (the last layer's output). Layer ``l``'s
residual-augmented, head-averaged map ``aug_l = 0.5 A + 0.5 I`` (rows renormalized, as in
rollout) gives the edge ``(l, i) -> (l - 1, j)`` the capacity ``aug_l[i, j]``. A token's flow is
the maximum flow from the explained output at the top to that input token; the flows of all
tokens are then divided by their sum, as in the reference implementation. For pooled outputs a
source feeds each top node with its query weight (1/n each for a mean).

It costs one max-flow per input token over a graph of ``L * n^2`` edges, O(n^4) in all, so texts
longer than :data:`FLOW_MAX_TOKENS` tokens are refused; rollout is the matrix-product relative
that scales.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from headmap.attribution.base import Attribution, Problem
from headmap.attribution.rollout import augment, stream_layer_means
from headmap.errors import HeadmapError
from headmap.result import LayerKey

if TYPE_CHECKING:
    import networkx as nx

#: Longest text flow accepts: ~3 s for 32 tokens through 30 layers on 2 CPU cores, growing as n^4.
FLOW_MAX_TOKENS = 48
_SOURCE = ("source", -1)


def check_length(n: int, limit: int = FLOW_MAX_TOKENS) -> None:
    if n > limit:
        raise HeadmapError(
            f"attention flow runs one max-flow per token over layers x tokens^2 edges (O(n^4)): this text has "
            f"{n} tokens, above its limit of {limit}; use rollout instead (or shorten the text)"
        )


def flow_graph(augmented: Sequence[np.ndarray], weights: np.ndarray) -> tuple[nx.DiGraph, object]:
    """The layered graph of ``augmented`` maps (first layer first) and its source node.

    Edges of zero capacity (keys a causal row cannot see) are left out.
    """
    import networkx as nx

    graph = nx.DiGraph()
    top = len(augmented)
    for layer, aug in enumerate(augmented, start=1):
        rows, keys = np.nonzero(aug > 0)
        graph.add_edges_from(
            ((layer, int(i)), (layer - 1, int(j)), {"capacity": float(aug[i, j])}) for i, j in zip(rows, keys)
        )
    picked = np.flatnonzero(weights > 0)
    if len(picked) == 1:
        return graph, (top, int(picked[0]))
    graph.add_edges_from((_SOURCE, (top, int(i)), {"capacity": float(weights[i])}) for i in picked)
    return graph, _SOURCE


def max_flows(augmented: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """``[token]`` maximum flow from the explained output to each input token (not normalized)."""
    from networkx.algorithms.flow import build_residual_network, preflow_push

    graph, source = flow_graph(augmented, np.asarray(weights, dtype=np.float64))
    # One residual network for every sink: preflow-push resets its flows on each run, and
    # building it is a third of the cost of a run.
    residual = build_residual_network(graph, "capacity")
    n = augmented[0].shape[0]
    out = np.zeros(n)
    for j in range(n):
        if (0, j) in graph and source in graph:
            out[j] = preflow_push(graph, source, (0, j), residual=residual, value_only=True).graph[
                "flow_value"
            ]
    return out


@dataclass(frozen=True)
class Flow:
    """Flow scores (normalized to sum 1). ``heads``: average over these heads (None: all)."""

    heads: tuple[int, ...] | None = None
    max_tokens: int = FLOW_MAX_TOKENS
    name: str = "flow"

    def attribute(self, problem: Problem) -> Attribution:
        check_length(problem.n, self.max_tokens)
        augmented: list[np.ndarray] = []

        def on_layer(key: LayerKey, mean: np.ndarray) -> None:
            augmented.append(augment(mean))

        plan = stream_layer_means(problem, self.heads, on_layer)
        flows = max_flows(augmented, problem.target.query_weights(problem.n))
        total = flows.sum()
        scores = flows / total if total > 0 else flows
        heads = "all" if self.heads is None else list(plan.heads)
        return Attribution(
            self.name,
            scores,
            signed=False,
            info={"layers": len(plan.layers), "heads": heads, "unnormalized_total": float(total)},
        )
