"""Attention x gradient: each attention weight times the gradient of the explained output with
respect to it, without switching the model to eager attention.

A head's output is ``O = A V``, so ``dF/dA[i, j] = dF/dO[i] . V[j]``. The capture tap hands over the
kernel's queries, keys and values and lets the kernel run; autograd gives ``dF/dO`` at the kernel's
output; ``A`` is recomputed from the tapped queries and keys exactly as capture does. A key's score
is ``sum over the chosen heads and every query row of A[h, i, j] * dF/dA[h, i, j]`` (rows the
output does not depend on have zero gradient), averaged over the chosen layers.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import torch

from headmap.attribution.attention import DEFAULT_LAYERS
from headmap.attribution.base import Attribution, Problem
from headmap.capture.discovery import discover
from headmap.capture.plan import resolve_heads, resolve_layers
from headmap.capture.recompute import attention_block, head_states
from headmap.capture.tap import AttentionCall, CapturePath, Proceed, module_scope, tap_around
from headmap.errors import HeadmapError
from headmap.result import LayerKey


def weight_times_gradient(call: AttentionCall, grad_out: torch.Tensor, heads: torch.Tensor) -> np.ndarray:
    """``[key]``: sum over ``heads`` and query rows of A * dF/dA for batch element 0.

    ``grad_out`` is dF/dO ``[batch, query, head, dim]`` (the kernel output's layout).
    """
    assert call.query is not None and call.key is not None and call.value is not None
    n = call.key.shape[2]
    positions = torch.arange(n, device=call.key.device)
    with torch.no_grad():
        states = head_states(call, 0, heads, positions)
        block = attention_block(call, states, 0, heads, positions, positions)
        weights = block.weights  # [head, row, width]
        n_rep = call.query.shape[1] // call.value.shape[1]
        value = call.value[0, heads // n_rep].float()  # [head, key, dim]
        grad = grad_out[0][:, heads].transpose(0, 1).float()  # [head, query, dim]
        grad_weights = grad @ value[:, : block.width].transpose(1, 2)  # [head, query, width]
        out = torch.zeros(n, dtype=torch.float64)
        out[: block.width] = (weights * grad_weights).double().sum((0, 1)).cpu()
    return out.numpy()


@dataclass(frozen=True)
class AttentionXGradient:
    """Attention x gradient scores of ``layers`` (default: the last) and ``heads`` (None: all)."""

    layers: tuple[int | str, ...] = DEFAULT_LAYERS
    heads: tuple[int, ...] | None = None
    name: str = "attention_x_gradient"

    def attribute(self, problem: Problem) -> Attribution:
        model = problem.loaded.model
        arch = discover(model)
        keys = resolve_layers(arch, list(self.layers))
        heads = torch.tensor(resolve_heads(arch, self.heads), dtype=torch.long)
        sites = {key: arch.sites[key] for key in keys}
        if any(site.path is CapturePath.EAGER_WEIGHTS for site in sites.values()):
            raise HeadmapError(
                f"{problem.loaded.name} computes its attention weights itself (eager-only attention), so there "
                "is no kernel to take the gradient at: use ig or input_x_gradient instead"
            )
        layer_of = {(id(site.module), site.occurrence): key for key, site in sites.items()}
        calls_seen: dict[
            int, int
        ] = {}  # per module: its calls so far (a shared module serves several layers)
        recorded: dict[LayerKey, tuple[AttentionCall, torch.Tensor]] = {}

        def around(call: AttentionCall, proceed: Proceed) -> torch.Tensor:
            occurrence = calls_seen.get(id(call.module), 0)
            calls_seen[id(call.module)] = occurrence + 1
            out = proceed()
            key = layer_of.get((id(call.module), occurrence))
            if key is not None:
                recorded[key] = (call, out)
            return out

        modules = list({id(s.module): s.module for s in sites.values()}.values())
        with ExitStack() as scope:
            scope.enter_context(torch.enable_grad())
            if any(site.path is CapturePath.TORCH_SDPA for site in sites.values()):
                scope.enter_context(module_scope(modules))
            scope.enter_context(tap_around(around, modules))
            output = problem.target.score(model, problem.inputs())[0]
        missing = [key.name for key in keys if key not in recorded]
        if missing:
            raise HeadmapError(f"the forward pass never reached {', '.join(missing)}")
        grads = torch.autograd.grad(output, [recorded[key][1] for key in keys], allow_unused=True)
        total = np.zeros(problem.n)
        for key, grad in zip(keys, grads):
            call = recorded[key][0]
            if grad is not None:  # a layer the output does not depend on contributes nothing
                total += weight_times_gradient(call, grad, heads.to(call.key.device))  # type: ignore[union-attr]  # the gradient exists: the forward ran with gates that require grad
        return Attribution(
            self.name,
            total / len(keys),
            signed=True,
            info={"layers": [k.name for k in keys], "heads": "all" if self.heads is None else heads.tolist()},
        )
