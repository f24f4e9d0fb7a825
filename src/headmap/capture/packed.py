"""One packed forward (see :mod:`headmap.capture.packing`): every attention layer's output computed
with each text confined to its own keys, and the asked layers handed to the consumer.

Per layer a fused kernel (the compiled one on a CPU, :mod:`headmap.capture.native`; Triton's on a
GPU, :mod:`headmap.capture.triton_stats`) takes the whole packed sequence in one call, each row's key range set to its text, and returns the output, every row's moments and, for
head distances, every row's weights; the consumer gets the batch's moments at once
(:meth:`PackedConsumer.consume_packed`), so a batch costs one reduction per layer, not one per text.
Without either, each text runs through the torch kernel on its own slice of the call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch

from headmap.capture import native, triton_stats
from headmap.capture.blocks import emit_blocks, text_ask
from headmap.capture.consumers import Consumer, MomentConsumer
from headmap.capture.fused import fused_attention
from headmap.capture.moments import RowMoments
from headmap.capture.packing import PackedBatch
from headmap.capture.plan import COMPILED, EXACT, TORCH, TRITON, CapturePlan
from headmap.capture.tap import AttentionCall
from headmap.result import LayerKey, Side

__all__ = ["PackedConsumer", "PackedForward"]


class PackedConsumer(MomentConsumer, Protocol):
    """A moment consumer that takes a packed batch's moments at once.

    ``wants_maps``: it also needs every row's weights (head distances)."""

    wants_maps: bool

    def consume_packed(
        self,
        items: Sequence[int],
        key: LayerKey,
        counts: Sequence[int],
        moments: RowMoments,
        maps: torch.Tensor | None,
    ) -> None:
        """``moments`` of the asked rows of ``items``, one text after another (``counts[i]`` rows of
        ``items[i]``, in plan order) and, where wanted, ``maps`` ``[head, row, width]``: each row's
        weights over its text's keys, its first key first (zero beyond the text)."""


def segment(call: AttentionCall, start: int, length: int) -> AttentionCall:
    """The part of a packed call that one text (positions ``start .. start + length``) computes:
    the call that text makes when it runs alone."""
    cut = slice(start, start + length)
    assert call.query is not None and call.key is not None and call.value is not None
    return replace(
        call,
        query=call.query[:, :, cut],
        key=call.key[:, :, cut],
        value=call.value[:, :, cut],
        mask=None if call.mask is None else call.mask[..., cut, cut],
        position_bias=None if call.position_bias is None else call.position_bias[..., cut, cut],
    )


@dataclass(frozen=True)
class _Asked:
    """What a packed batch's texts ask of a layer, in the compiled kernel's terms: the layout, the asked
    rows' positions ``[row]``, their token indices in their texts, their texts' lengths, and how many
    rows each text asks."""

    layout: native.ElementLayout
    rows: torch.Tensor
    text_rows: torch.Tensor
    lengths: torch.Tensor
    counts: list[int]


@dataclass
class PackedForward:
    """The state of one packed forward: the plan, the consumer, the texts (``batch``) and where they lie."""

    plan: CapturePlan
    consumer: Consumer
    batch: Sequence[int]
    packed: PackedBatch
    head_index: dict[LayerKey, torch.Tensor]
    block_bytes: int
    _plain: native.ElementLayout | None = None
    # What layers ask, by what they ask (rows, heads, overview): every layer of a stack usually asks
    # the same, so it is worked out once per forward.
    _asked: dict[tuple[object, ...], _Asked] = field(default_factory=dict)

    @property
    def _moments_to(self) -> PackedConsumer | None:
        wants = getattr(self.consumer, "wants_moments", False)
        return self.consumer if wants else None  # type: ignore[return-value]  # it says it takes moments

    def output(self, call: AttentionCall, run: native.Runner | None) -> torch.Tensor:
        """The layer's output ``[1, query, head, dim]``, each text confined to its own keys."""
        q = call.query
        assert q is not None
        if run is not None:
            if self._plain is None:
                runs = self.packed.valid[Side.SOURCE]
                nothing = [torch.zeros(0, dtype=torch.long)] * len(runs)
                self._plain = native.ElementLayout.of_runs(runs, nothing, q.shape[2], q.shape[2], packed=True)
            return run(call, 0, self._plain, 0).out[None].to(q.dtype)
        parts = [
            fused_attention(segment(call, o, n), [None], self.block_bytes, TORCH)[0]
            for o, n in zip(self.packed.offsets, self.packed.lengths, strict=True)
        ]
        return torch.cat(parts, dim=1)

    def layer(self, call: AttentionCall, key: LayerKey | None) -> torch.Tensor:
        """The output of one attention call of the packed forward; for an asked layer (``key``), also
        its blocks or moments, handed to the consumer."""
        kind, run, refused = _kernel(call)
        if key is None:
            return self.output(call, run)
        consumer = self._moments_to
        pooled = consumer is not None and any(consumer.key_cells(item, key) for item in self.batch)
        maps = getattr(consumer, "wants_maps", False)
        if consumer is not None and run is not None and not pooled:
            self.plan.record_kernel(kind, "packed batch", key)
            return self._compiled(call, key, consumer, run, maps)
        why = refused or "an overview map is asked, which only the torch kernel makes"
        if consumer is not None and not maps:
            self.plan.record_kernel(TORCH, f"packed batch, each text alone: {why}", key)
            return self._per_text(call, key, consumer)
        if consumer is not None:  # head distances without the compiled kernel: whole rows as blocks
            self.plan.record_kernel(EXACT, f"packed batch: {why}", key)
        out = self.output(call, run)
        emit_blocks(
            call, key, self.plan, self.consumer, self.batch, self.packed.valid, self.head_index[key],
            self.block_bytes, elements=[0] * len(self.batch),
        )  # fmt: skip
        return out

    def _asked_of(self, call: AttentionCall, key: LayerKey, consumer: PackedConsumer) -> _Asked:
        """What the texts ask of layer ``key``, worked out once for every layer that asks the same."""
        plan = self.plan
        rows = tuple(plan.rows[item][key] for item in self.batch)
        cells = tuple(consumer.key_cells(item, key) for item in self.batch)
        signature = (key.stack, plan.heads_of(key), rows, cells)
        if signature not in self._asked:
            q = call.query
            assert q is not None
            positions = self.packed.valid[key.stack.key_side]
            asks = [
                text_ask(key, plan, consumer, item, positions[b], positions[b], q.device)
                for b, item in enumerate(self.batch)
            ]
            self._asked[signature] = _Asked(
                layout=native.ElementLayout.of(asks, q.shape[2], q.shape[2], packed=True),
                rows=torch.cat([a.rows.cpu() for a in asks]),
                text_rows=torch.cat([a.text_rows for a in asks]),
                lengths=torch.cat([torch.full((len(a.rows),), len(a.keys)) for a in asks]),
                counts=[len(a.rows) for a in asks],
            )
        return self._asked[signature]

    def _compiled(
        self, call: AttentionCall, key: LayerKey, consumer: PackedConsumer, run: native.Runner, maps: bool
    ) -> torch.Tensor:
        asked = self._asked_of(call, key, consumer)
        q = call.query
        assert q is not None
        found = run(call, 0, asked.layout, max(self.packed.lengths) if maps else 0)
        moments = native.row_moments(found.sums, asked.rows, asked.text_rows, asked.lengths, cross=False)
        heads = self.head_index[key]
        if len(heads) != q.shape[1] or not torch.equal(heads, torch.arange(q.shape[1])):
            moments = moments.select_heads(heads)
        kept = (
            None
            if found.maps is None
            else found.maps.index_select(0, heads.to(found.maps.device))[:, asked.rows.to(found.maps.device)]
        )
        if hasattr(consumer, "consume_packed"):
            consumer.consume_packed(list(self.batch), key, asked.counts, moments, kept)
        else:
            start = 0
            for item, n in zip(self.batch, asked.counts, strict=True):
                consumer.consume_moments(item, key, torch.arange(n), moments.slice_rows(start, start + n))
                start += n
        return found.out[None].to(q.dtype)

    def _per_text(self, call: AttentionCall, key: LayerKey, consumer: PackedConsumer) -> torch.Tensor:
        """Each text through the torch kernel on its own slice of the call (no compiled kernel)."""
        parts = []
        device = call.query.device  # type: ignore[union-attr]  # fused calls carry queries
        for item, o, n in zip(self.batch, self.packed.offsets, self.packed.lengths, strict=True):
            alone = torch.arange(n)
            ask = text_ask(key, self.plan, consumer, item, alone, alone, device)
            out, found = fused_attention(segment(call, o, n), [ask], self.block_bytes, TORCH)
            assert found[0] is not None
            consumer.consume_moments(item, key, ask.plan_index, found[0].select_heads(self.head_index[key]))
            parts.append(out)
        return torch.cat(parts, dim=1)


def _kernel(call: AttentionCall) -> tuple[str, native.Runner | None, str]:
    """The fused kernel that runs a packed call whole: ``(kind, runner, why none)``, Triton's on a GPU,
    the compiled one on a CPU (None, and the reason, where neither can)."""
    refused = triton_stats.refusal(call)
    if refused is None:
        return TRITON, triton_stats.run_element, ""
    q = call.query
    if q is not None and q.device.type != "cpu":
        return TRITON, None, refused
    refused = native.refusal(call) or ""
    kernel = native.module() if not refused else None
    if kernel is None:
        return COMPILED, None, refused or native.unavailable() or "the compiled kernel is unavailable"
    return COMPILED, native.runner(kernel), ""
