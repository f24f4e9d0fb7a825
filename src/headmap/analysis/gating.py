"""Change what chosen heads contribute: advice on each layer's kernel output, before the output projection.

The attention kernel of a layer returns ``[batch, query, head, dim]``, each head's output before the
heads are concatenated and projected. :func:`gate_heads` runs a function on that tensor for the
asked layers (through :func:`headmap.capture.tap.tap_around`), which is where ablation zeroes or
replaces a head and where head importance multiplies a gate. It works wherever the capture taps a
kernel (transformers' dispatch or torch SDPA); models on the eager-weights path (Bloom, DeBERTa)
compute their attention output themselves, so there is nothing to gate.

A module that serves several layers (ALBERT) is told apart by counting its calls within each
forward (:class:`headmap.capture.intercept.LayerAddressing`, the rule capture uses): hooks on the
model's forward reset the count. Taps are per thread, so the gating applies
to forwards run on the thread that entered the context and to no other: a dashboard can ablate
for one user while another user's request runs unchanged on the same model.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import torch

from headmap.capture.discovery import discover, forward_module
from headmap.capture.intercept import CallCounter, LayerAddressing
from headmap.capture.plan import resolve_layers
from headmap.capture.tap import AttentionCall, CapturePath
from headmap.errors import HeadmapError, check_index
from headmap.models import LoadedModel
from headmap.result import LayerKey, Side

#: ``advice(key, output, call, forward) -> output``: output is ``[batch, query, head, dim]``.
Advice = Callable[[LayerKey, torch.Tensor, AttentionCall, "ForwardState"], torch.Tensor]


@dataclass
class ForwardState:
    """What the gating knows about the forward running on this thread."""

    calls: CallCounter = field(default_factory=CallCounter)  # calls so far in this forward
    masks: dict[Side, torch.Tensor | None] = field(default_factory=dict)  # 2-D attention masks per side

    def real_queries(self, key: LayerKey, batch: int, queries: int) -> torch.Tensor | None:
        """``[batch, query]`` bool of real (non-padding) query positions of ``key``, None when unknown.

        From the ``attention_mask`` (``decoder_attention_mask`` for decoder and cross layers) given to
        the model; with a cache, the current queries are the mask's last columns.
        """
        mask = self.masks.get(key.stack.query_side)
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
    addressing = LayerAddressing(discover(module), layers)
    if CapturePath.EAGER_WEIGHTS in addressing.paths:
        raise _needs_kernel(module, what)
    local = threading.local()

    def state() -> ForwardState:
        if not hasattr(local, "state"):
            local.state = ForwardState()
        current: ForwardState = local.state
        return current

    def reset(_module: torch.nn.Module, args: tuple[object, ...], kwargs: dict[str, object]) -> None:
        current = state()
        current.calls.reset()
        current.masks = {
            Side.SOURCE: _tensor_or_none(kwargs.get("attention_mask")),
            Side.TARGET: _tensor_or_none(kwargs.get("decoder_attention_mask")),
        }

    def around(call: AttentionCall, proceed: Callable[[], torch.Tensor]) -> torch.Tensor:
        out = proceed()
        current = state()
        key = addressing.locate(call, current.calls)
        return out if key is None else advice(key, out, call, current)

    roots = list({id(m): m for m in (module, forward_module(module))}.values())
    with ExitStack() as scope:
        for root in roots:
            handle = root.register_forward_pre_hook(reset, with_kwargs=True)
            scope.callback(handle.remove)
        scope.enter_context(addressing.intercept(around))
        yield


def _tensor_or_none(value: object) -> torch.Tensor | None:
    return value if isinstance(value, torch.Tensor) else None


__all__ = ["Advice", "ForwardState", "eval_mode", "gate_heads", "model_of", "resolve_pairs"]
