"""Change what chosen heads contribute: advice on each layer's kernel output, before the output projection.

The attention kernel of a layer returns ``[batch, query, head, dim]``, each head's output before the
heads are concatenated and projected. :func:`gate_heads` runs a function on that tensor for the
asked layers (through :func:`headmap.capture.tap.tap_around`), which is where ablation zeroes or
replaces a head and where head importance multiplies a gate. It works wherever the capture taps a
kernel (transformers' dispatch or torch SDPA); models on the eager-weights path (Bloom, DeBERTa)
compute their attention output themselves, so there is nothing to gate.

A module that serves several layers (ALBERT) is told apart by counting its calls within each
forward: hooks on the model's forward reset the count. Taps are per thread, so the gating applies
to forwards run on the thread that entered the context and to no other: a dashboard can ablate
for one user while another user's request runs unchanged on the same model.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import torch

from headmap.capture.discovery import Path, discover, forward_module
from headmap.capture.plan import resolve_layers
from headmap.capture.tap import AttentionCall, module_scope, tap_around
from headmap.errors import HeadmapError, check_index
from headmap.models import LoadedModel
from headmap.result import LayerKey, Stack

#: ``advice(key, output, call, forward) -> output``: output is ``[batch, query, head, dim]``.
Advice = Callable[[LayerKey, torch.Tensor, AttentionCall, "ForwardState"], torch.Tensor]


@dataclass
class ForwardState:
    """What the gating knows about the forward running on this thread."""

    calls: dict[int, int] = field(default_factory=dict)  # id(module) -> calls so far in this forward
    masks: dict[str, torch.Tensor | None] = field(default_factory=dict)  # "source"/"target" 2-D masks

    def real_queries(self, key: LayerKey, batch: int, queries: int) -> torch.Tensor | None:
        """``[batch, query]`` bool of real (non-padding) query positions of ``key``, None when unknown.

        From the ``attention_mask`` (``decoder_attention_mask`` for decoder and cross layers) given to
        the model; with a cache, the current queries are the mask's last columns.
        """
        mask = self.masks.get("target" if key.stack in (Stack.DECODER, Stack.CROSS) else "source")
        if mask is None or mask.ndim != 2 or mask.shape[0] != batch or mask.shape[1] < queries:
            return None
        return mask[:, mask.shape[1] - queries :].bool()


def model_of(model: LoadedModel | torch.nn.Module) -> torch.nn.Module:
    return model.model if isinstance(model, LoadedModel) else model


def resolve_pairs(
    model: LoadedModel | torch.nn.Module, heads: Sequence[tuple[int | str | LayerKey, int]]
) -> dict[LayerKey, list[int]]:
    """``[(layer, head), ...]`` -> ``{LayerKey: [head, ...]}``, checked against the model.

    A layer is an index (for encoder-decoder models it means that depth in every stack), a name such
    as ``"encoder.2"`` or a :class:`LayerKey`; heads may be negative.
    """
    arch = discover(model_of(model))
    out: dict[LayerKey, list[int]] = {}
    pairs = list(heads)
    for pair in pairs:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise HeadmapError(
                f"heads are (layer, head) pairs, such as [(3, 5), ('layer.4', 0)], not {pair!r}"
            )
        layer, head = pair
        for key in resolve_layers(arch, layer):
            # A pruned model's layers have different head counts: check against the layer's own.
            h = check_index(int(head), arch.heads_in(key), f"{key.name} head" if arch.layer_heads else "head")
            if h not in out.setdefault(key, []):
                out[key].append(h)
    return {k: sorted(v) for k, v in sorted(out.items(), key=lambda kv: kv[0].sort_key)}


def _needs_kernel(model: torch.nn.Module, what: str) -> HeadmapError:
    return HeadmapError(
        f"{type(model).__name__} ({getattr(model.config, 'model_type', '?')}) computes its attention in its own "
        f"eager code, so headmap sees its weights but has no kernel output to change: {what} needs a model "
        "whose attention goes through transformers' attention dispatch or torch SDPA"
    )


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Every module in eval mode inside the block, then each back to its own earlier mode (a model
    being fine-tuned with some parts frozen in eval mode keeps them so)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def gate_heads(
    model: LoadedModel | torch.nn.Module,
    layers: Sequence[LayerKey],
    advice: Advice,
    what: str = "gating heads",
) -> Iterator[None]:
    """Run ``advice`` on the kernel output of every layer in ``layers`` during forwards on this thread."""
    module = model_of(model)
    arch = discover(module)
    sites = {key: arch.sites[key] for key in layers}
    if any(site.path is Path.EAGER_WEIGHTS for site in sites.values()):
        raise _needs_kernel(module, what)
    layer_of = {(id(s.module), s.occurrence): key for key, s in sites.items()}
    # How many layers each module serves in one forward (3 for a 3-layer ALBERT, else 1).
    per_forward: dict[int, int] = {}
    for site in arch.sites.values():
        per_forward[id(site.module)] = per_forward.get(id(site.module), 0) + 1
    local = threading.local()

    def state() -> ForwardState:
        if not hasattr(local, "state"):
            local.state = ForwardState()
        return local.state

    def reset(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        current = state()
        current.calls.clear()
        current.masks = {
            "source": kwargs.get("attention_mask"),
            "target": kwargs.get("decoder_attention_mask"),
        }

    def around(call: AttentionCall, proceed: Callable[[], torch.Tensor]) -> torch.Tensor:
        out = proceed()
        current = state()
        seen = current.calls.get(id(call.module), 0)
        current.calls[id(call.module)] = seen + 1
        key = layer_of.get((id(call.module), seen % per_forward[id(call.module)]))
        return out if key is None else advice(key, out, call, current)

    modules = list({id(s.module): s.module for s in sites.values()}.values())
    roots = list({id(m): m for m in (module, forward_module(module))}.values())
    with ExitStack() as scope:
        for root in roots:
            handle = root.register_forward_pre_hook(reset, with_kwargs=True)
            scope.callback(handle.remove)
        if any(site.path is Path.TORCH_SDPA for site in sites.values()):
            scope.enter_context(module_scope(modules))
        scope.enter_context(tap_around(around, modules))
        yield


__all__ = ["Advice", "ForwardState", "eval_mode", "gate_heads", "model_of", "resolve_pairs"]
