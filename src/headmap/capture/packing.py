"""Packed batches: a batch's texts run as one unpadded sequence, each confined to its own keys.

A padded batch computes every text at the length of the longest, and hands each text's rows to the
statistics one text at a time. A packed batch concatenates the texts into one sequence (batch 1),
restarts the position ids at each text (so each gets the positions it has alone) and confines every
query to the keys of its own text: causal or bidirectional as the model is, with its sliding window,
softcap and mask, as if the text ran alone. Only attention mixes positions in these models, so each
text's every hidden state equals the one it gets alone (to float32 rounding: tested per family).

headmap confines the texts itself: in a packed forward it taps every attention layer up to the last
one asked, and each layer's output comes from headmap's kernels with each row's key range set to its
own text (the model's own kernel would let texts see each other). That needs a model whose attention
headmap can compute (float32, eval mode, no eager-only weights), that takes position ids, and one
stack of layers; :func:`pack_refusal` says why another model runs padded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from headmap.capture.discovery import Architecture
from headmap.capture.tap import CapturePath
from headmap.result import Side

__all__ = ["PackedBatch", "pack_refusal", "packed_inputs"]


def pack_refusal(arch: Architecture, model: torch.nn.Module) -> str | None:
    """Why this model's batches cannot run packed (None when they can)."""
    if arch.is_encoder_decoder:
        return (
            "an encoder-decoder model: cross-attention would need each text's source and target "
            "boundaries, so its batches run padded"
        )
    if CapturePath.EAGER_WEIGHTS in arch.paths:
        return (
            "the model computes its attention weights itself (eager-only attention), so headmap cannot "
            "confine each text to its own keys; its batches run padded"
        )
    if not arch.accepts_position_ids or arch.position_offset is None:
        return "the model takes no position ids, so packed texts could not restart their positions"
    parameter = next(model.parameters(), None)
    if parameter is not None and parameter.dtype != torch.float32:
        return (
            f"the model runs in {parameter.dtype}, and headmap's kernels reproduce float32 attention only; "
            "its batches run padded"
        )
    if model.training:
        return "the model is in training mode (attention dropout); its batches run padded"
    return None


@dataclass(frozen=True)
class PackedBatch:
    """One packed forward: the model's ``inputs`` (batch 1), each text's ``offsets`` and ``lengths``
    in the sequence, and its positions there (``valid``, as the engine's padded batches give them)."""

    inputs: dict[str, torch.Tensor]
    offsets: tuple[int, ...]
    lengths: tuple[int, ...]

    @property
    def valid(self) -> dict[Side, list[torch.Tensor]]:
        return {
            Side.SOURCE: [torch.arange(o, o + n) for o, n in zip(self.offsets, self.lengths, strict=True)]
        }

    @property
    def total(self) -> int:
        return sum(self.lengths)


def packed_inputs(arch: Architecture, sources: Sequence[Sequence[int]]) -> PackedBatch:
    """The inputs of one packed forward over ``sources`` (token ids of each text): the ids one after
    another, position ids restarting at each text (from the model's own offset), and an attention
    mask of ones (no padding; headmap's kernels keep the texts apart)."""
    assert arch.position_offset is not None, "pack_refusal checks for a position offset"
    lengths = tuple(len(s) for s in sources)
    offsets = tuple(int(sum(lengths[:i])) for i in range(len(lengths)))
    ids = torch.tensor([token for s in sources for token in s], dtype=torch.long)[None]
    positions = torch.cat([torch.arange(n) for n in lengths])[None] + arch.position_offset
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "position_ids": positions,
    }
    return PackedBatch(inputs, offsets, lengths)
