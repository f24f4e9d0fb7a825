"""An independent way to remove heads, for checking ablation and importance: forward pre-hooks on each
layer's output projection that change the projection's input columns of a head (its slice of the
concatenated head outputs), written without any of headmap's taps."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

#: Output projection of each attention layer, by tiny-model name: {layer name: module path}.
PROJECTIONS: dict[str, Callable[[int], dict[str, str]]] = {
    "bert": lambda n: {f"layer.{i}": f"encoder.layer.{i}.attention.output.dense" for i in range(n)},
    "roberta": lambda n: {f"layer.{i}": f"encoder.layer.{i}.attention.output.dense" for i in range(n)},
    "llama": lambda n: {f"layer.{i}": f"model.layers.{i}.self_attn.o_proj" for i in range(n)},
    "qwen2": lambda n: {f"layer.{i}": f"model.layers.{i}.self_attn.o_proj" for i in range(n)},
    "mistral": lambda n: {f"layer.{i}": f"model.layers.{i}.self_attn.o_proj" for i in range(n)},
    "gemma2": lambda n: {f"layer.{i}": f"model.layers.{i}.self_attn.o_proj" for i in range(n)},
    "gpt2": lambda n: {f"layer.{i}": f"transformer.h.{i}.attn.c_proj" for i in range(n)},
    "gpt_neox": lambda n: {f"layer.{i}": f"gpt_neox.layers.{i}.attention.dense" for i in range(n)},
    "falcon": lambda n: {f"layer.{i}": f"transformer.h.{i}.self_attention.dense" for i in range(n)},
    "t5": lambda n: {
        **{f"encoder.{i}": f"encoder.block.{i}.layer.0.SelfAttention.o" for i in range(n)},
        **{f"decoder.{i}": f"decoder.block.{i}.layer.0.SelfAttention.o" for i in range(n)},
        **{f"cross.{i}": f"decoder.block.{i}.layer.1.EncDecAttention.o" for i in range(n)},
    },
    "bart": lambda n: {
        **{f"encoder.{i}": f"model.encoder.layers.{i}.self_attn.out_proj" for i in range(n)},
        **{f"decoder.{i}": f"model.decoder.layers.{i}.self_attn.out_proj" for i in range(n)},
        **{f"cross.{i}": f"model.decoder.layers.{i}.encoder_attn.out_proj" for i in range(n)},
    },
    # One projection shared by every layer: its i-th call in a forward is layer i.
    "albert": lambda n: {
        f"layer.{i}": "encoder.albert_layer_groups.0.albert_layers.0.attention.dense" for i in range(n)
    },
}

#: A function ``(input [batch, query, dim], layer, head, column slice) -> new input`` per head.
Change = Callable[[torch.Tensor, str, int, slice], torch.Tensor]


@contextmanager
def hand_gate(
    model: torch.nn.Module, paths: dict[str, str], heads: dict[str, list[int]], head_dim: int, change: Change
) -> Iterator[None]:
    """Apply ``change`` to each chosen head's columns of the output projection's input."""
    layers_of: dict[str, list[str]] = {}
    for layer, path in paths.items():
        layers_of.setdefault(path, []).append(layer)
    handles = []
    calls: dict[str, int] = {}

    def make(path: str):  # type: ignore[no-untyped-def]
        def hook(module, args):  # type: ignore[no-untyped-def]
            served = layers_of[path]
            count = calls.get(path, 0)
            calls[path] = count + 1
            layer = served[count % len(served)]
            x = args[0]
            for head in heads.get(layer, []):
                x = change(x, layer, head, slice(head * head_dim, (head + 1) * head_dim))
            return (x, *args[1:])

        return hook

    for path in layers_of:
        if any(heads.get(layer) for layer in layers_of[path]):
            handles.append(model.get_submodule(path).register_forward_pre_hook(make(path)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def zero_change(x: torch.Tensor, layer: str, head: int, cols: slice) -> torch.Tensor:
    x = x.clone()
    x[..., cols] = 0
    return x


def scale_change(factor: dict[tuple[str, int], float | torch.Tensor]) -> Change:
    """Multiply a head's columns by its factor (a number, or a 0-d tensor to take gradients by)."""

    def change(x: torch.Tensor, layer: str, head: int, cols: slice) -> torch.Tensor:
        f = torch.as_tensor(factor.get((layer, head), 1.0), dtype=x.dtype)
        ones = torch.ones(x.shape[-1], dtype=x.dtype)
        scale = torch.cat([ones[: cols.start], f.expand(cols.stop - cols.start), ones[cols.stop :]])
        return x * scale  # out of place: autograd keeps every head's factor

    return change


def const_change(values: dict[tuple[str, int], torch.Tensor]) -> Change:
    def change(x: torch.Tensor, layer: str, head: int, cols: slice) -> torch.Tensor:
        x = x.clone()
        x[..., cols] = values[(layer, head)].to(x)
        return x

    return change


def masked_mean_change(mask: torch.Tensor) -> Change:
    """Each text's mean over its real positions (``mask`` ``[batch, query]``), at every position."""

    def change(x: torch.Tensor, layer: str, head: int, cols: slice) -> torch.Tensor:
        x = x.clone()
        w = mask.to(x.dtype)[:, :, None]
        mean = (x[..., cols] * w).sum(1, keepdim=True) / w.sum(1, keepdim=True)
        x[..., cols] = mean.expand_as(x[..., cols])
        return x

    return change


def recorder(store: dict[tuple[str, int], list[torch.Tensor]]) -> Change:
    """Collect each head's input columns (one ``[query, dim]`` per call, batch of one)."""

    def change(x: torch.Tensor, layer: str, head: int, cols: slice) -> torch.Tensor:
        store.setdefault((layer, head), []).append(x[0, :, cols].detach().double())
        return x

    return change
