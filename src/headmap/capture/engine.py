"""Capture attention maps: tap the asked layers, recompute their weights block by block, hand the
blocks to a consumer.

The default consumer (:class:`MapStore`) keeps the maps that were asked for; others reduce blocks
to statistics without ever holding an ``N x N`` map. Only the layers, heads and query rows asked
for are computed, and the forward pass stops after the last asked layer. The model runs exactly as
``model(**tokenizer(text))`` would: same token ids, no position ids unless padding needs them (and
then the ones the text gets alone). All per-capture state lives in the call, and the taps are per
thread, so concurrent captures on one model each get their serial result.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from typing import Protocol, cast

import torch

from headmap.capture import native
from headmap.capture.audio import capture_items, encode_media, is_one, media_inputs
from headmap.capture.blocks import Valid, emit_blocks, fused_asks
from headmap.capture.consumers import Consumer, MapStore, MomentConsumer
from headmap.capture.discovery import Architecture, discover, forward_module
from headmap.capture.encoding import extra_inputs, pad_batch, pad_token_id
from headmap.capture.fused import fused_attention, route
from headmap.capture.images import ImageInput, Input, text_or_image
from headmap.capture.intercept import CallCounter, LayerAddressing
from headmap.capture.packed import PackedForward
from headmap.capture.packing import PackedBatch, pack_refusal, packed_inputs
from headmap.capture.plan import (
    EXACT,
    WEIGHTS,
    CapturePlan,
    LayerSpec,
    RowSpec,
    resolve_heads,
    resolve_layer_heads,
    resolve_layers,
    resolve_rows,
)
from headmap.capture.tap import AttentionCall, CapturePath, Proceed
from headmap.errors import HeadmapError
from headmap.models import LoadedModel, load
from headmap.models.devices import input_device
from headmap.result import AttentionResult, LayerKey, Side

DEFAULT_BLOCK_BYTES = 64 * 2**20

__all__ = ["DEFAULT_BLOCK_BYTES", "CapturePlan", "Consumer", "MapStore", "capture", "stream"]


class _Bar(Protocol):
    """The progress bar's one method the engine uses (tqdm's)."""

    def update(self, n: float | None = 1) -> bool | None: ...

    def close(self) -> None: ...


class _StopForward(Exception):
    """Raised from the tap once every asked layer is done, so deeper layers are never computed."""


def capture(
    model: LoadedModel | str,
    text: Input | Sequence[Input] | None = None,
    *,
    image: ImageInput | str | None = None,
    layers: LayerSpec | Sequence[LayerSpec] | None = None,
    heads: int | Sequence[int] | None = None,
    rows: RowSpec = None,
    target: str | Sequence[str] | None = None,
    batch_size: int = 8,
    padding_side: str = "right",
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    progress: bool = False,
    pack: bool = False,
) -> AttentionResult | list[AttentionResult]:
    """Capture attention maps of ``text`` (one string -> one result, a list -> a list of results).

    A text is a string (tokenized as ``tokenizer(text)`` does) or an
    :class:`~headmap.capture.encoding.Encoded` (exact ids, e.g. a chat prompt plus an answer).

    ``layers``: indices (negative allowed; for encoder-decoder models an index selects that depth
    in every stack), names such as ``"cross.2"``, or None for all. ``heads``: model head numbers or
    None for all. ``rows``: query rows to keep (an index, slice or list, relative to each text;
    ``-1`` is the last token), None for all. ``target``: decoder text of encoder-decoder models
    (defaults to the input text). The model keeps its own attention implementation. ``pack``: run
    each batch as one unpadded sequence (see :func:`stream`; the maps are the same).

    An image model takes an image instead: ``image=`` a path or PIL image (or ``text=`` a PIL image,
    a ``Path`` or a list of them); its units are its prefix tokens and patches (``Tokens.patches``).
    """
    text = text_or_image(text, image)
    store = MapStore()
    stream(
        model,
        text,
        store,
        layers=layers,
        heads=heads,
        rows=rows,
        target=target,
        batch_size=batch_size,
        padding_side=padding_side,
        block_bytes=block_bytes,
        progress=progress,
        pack=pack,
    )
    results = store.results()
    return results[0] if is_one(text) else results


def stream(
    model: LoadedModel | str,
    text: Input | Sequence[Input],
    consumer: Consumer,
    *,
    layers: LayerSpec | Sequence[LayerSpec] | None = None,
    heads: int | Sequence[int] | None = None,
    rows: RowSpec = None,
    target: str | Sequence[str] | None = None,
    batch_size: int = 8,
    padding_side: str = "right",
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    progress: bool = False,
    pack: bool | None = None,
) -> CapturePlan:
    """Run the model on ``text`` and hand every attention block of the asked layers to ``consumer``.

    ``pack``: run each batch's texts as one unpadded sequence, each confined to its own keys
    (:mod:`headmap.capture.packing`); None (default) packs where the consumer takes moments (the
    statistics), False never, True wherever the model allows. The plan's notes say which, and why
    a model's batches run padded."""
    loaded = load(model) if isinstance(model, str) else model
    arch = discover(loaded.model)
    texts = capture_items(loaded, text)
    if not texts:
        raise HeadmapError("no text given: pass at least one text")
    if padding_side not in ("left", "right"):
        raise HeadmapError(f"padding side must be 'left' or 'right', not {padding_side!r}")
    limit = max_tokens(loaded, arch)
    encoded, pixels, targets = encode_media(loaded, arch, texts, target, limit)
    keys = resolve_layers(arch, layers)
    wanted = pack if pack is not None else bool(getattr(consumer, "wants_moments", False))
    several = len(texts) > 1 and batch_size > 1
    refusal = pack_refusal(arch, loaded.model) if wanted and several else None
    if refusal is None and wanted:
        native.prepare(sum(len(ids) for ids, _ in encoded))
    if refusal is None and wanted and pack is None:
        refusal = _cpu_refusal(loaded.model)
    packing = wanted and several and refusal is None
    plan = CapturePlan(
        model=loaded.name,
        layers=keys,
        heads=resolve_heads(arch, heads),
        sources=tuple(tokens for _, tokens in encoded),
        targets=tuple(tokens for _, tokens in targets) if targets else (None,) * len(texts),
        rows=tuple(
            {
                k: resolve_rows(
                    rows, len(targets[i][1] if k.stack.query_side is Side.TARGET else encoded[i][1])
                )
                for k in keys
            }
            for i in range(len(texts))
        ),
        num_layers=arch.num_layers,
        num_heads=arch.num_heads,
        notes=_path_notes(arch, keys)
        + _dtype_notes(loaded.model)
        + _fused_notes(loaded, consumer)
        + _pack_notes(packing, refusal),
        layer_heads=resolve_layer_heads(arch, keys, heads),
    )
    consumer.begin(plan)
    pad = pad_token_id(loaded.tokenizer)
    bar = _progress(progress, len(keys) * len(texts))
    step = max(1, batch_size)
    try:
        for first in range(0, len(texts), step):
            batch = range(first, min(len(texts), first + step))
            if packing:
                packed = packed_inputs(arch, [encoded[i][0] for i in batch])
                _run_batch(
                    loaded, arch, plan, consumer, batch, packed.inputs, packed.valid, block_bytes, bar, packed
                )
                continue
            if pixels:
                inputs, valid = media_inputs(arch, pixels, encoded, targets, batch)
            else:
                inputs, valid = _batch_inputs(
                    arch,
                    [encoded[i][0] for i in batch],
                    [targets[i][0] for i in batch] if targets else None,
                    pad,
                    padding_side,
                )
                inputs.update(extra_inputs([texts[i] for i in batch]))  # a VLM's image: pixel_values
            _run_batch(loaded, arch, plan, consumer, batch, inputs, valid, block_bytes, bar)
    finally:
        if bar is not None:
            bar.close()
    return plan


def max_tokens(loaded: LoadedModel, arch: Architecture) -> int | None:
    """The longest text the model's position table takes (RoBERTa's starts at padding_idx + 1)."""
    if loaded.max_positions is None:
        return None
    return loaded.max_positions - (arch.position_offset or 0)


def _path_notes(arch: Architecture, keys: Sequence[LayerKey]) -> tuple[str, ...]:
    paths = {arch.sites[k].path for k in keys} - {CapturePath.DISPATCH}
    return tuple(
        f"capture path: {path.value} ({path.describe()})" for path in sorted(paths, key=lambda p: p.value)
    )


def _dtype_notes(model: torch.nn.Module) -> tuple[str, ...]:
    """How the maps of a model that runs in half precision were computed (README: Precision)."""
    parameter = next(model.parameters(), None)
    if parameter is None or parameter.dtype == torch.float32:
        return ()
    return (
        f"precision: the model runs in {parameter.dtype}; maps are float32, with scores and softmax in "
        "float32 from its own queries and keys as its kernel computes them (eager weights differ by their "
        "rounding), or its own weights where it computes them itself",
    )


def _cpu_refusal(model: torch.nn.Module) -> str | None:
    """Why packing would not pay on this model's device (None where it does): on a CPU only the
    compiled kernel computes a packed batch faster than the model's kernel does a padded one."""
    missing = native.unavailable()
    if input_device(model).type != "cpu" or (missing is None and native.built()):
        return None
    missing = missing or "not built yet: a corpus of 1,024 tokens or more builds it"
    return f"on a CPU without the compiled kernel ({missing}), a padded batch is faster"


def _pack_notes(packing: bool, refusal: str | None) -> tuple[str, ...]:
    if packing:
        return (
            "packed batches: each batch's texts run as one unpadded sequence, each text confined to its own keys",
        )
    return (f"batches run padded, not packed: {refusal}",) if refusal else ()


def _fused_notes(loaded: LoadedModel, consumer: Consumer) -> tuple[str, ...]:
    """Why a moment consumer cannot have the fused kernel at all; which kernel served which layers
    is known only as they run (:meth:`CapturePlan.kernel_notes`)."""
    if not getattr(consumer, "wants_moments", False):
        return ()
    parameter = next(loaded.model.parameters(), None)
    if parameter is not None and parameter.dtype != torch.float32:
        return (
            f"statistics: exact recomputation after the model's kernel (the model runs in {parameter.dtype}; "
            "the fused kernel reproduces float32 attention only)",
        )
    if loaded.model.training:
        return ("statistics: exact recomputation after the model's kernel (the model is in training mode)",)
    return ()


def _batch_inputs(
    arch: Architecture, sources: list[list[int]], targets: list[list[int]] | None, pad: int, side: str
) -> tuple[dict[str, torch.Tensor], Valid]:
    """Model inputs for one batch, and each text's real (non-padding) positions per side.

    A text alone, or a batch of equal lengths, gets exactly ``tokenizer(text)``'s inputs. Padding
    goes on the right, where real tokens keep the positions they have alone whatever the model
    counts from; left padding is honoured where the model's position ids are known, with the ids
    each text gets alone.
    """
    ragged = len({len(s) for s in sources}) > 1
    left = side == "left" and ragged and arch.accepts_position_ids and arch.position_offset is not None
    ids, mask, positions = pad_batch(sources, pad, "left" if left else "right")
    inputs: dict[str, torch.Tensor] = {"input_ids": ids, "attention_mask": mask}
    if left:
        assert arch.position_offset is not None  # ``left`` requires it
        inputs["position_ids"] = positions + arch.position_offset
    valid = {Side.SOURCE: [torch.nonzero(m).flatten() for m in mask]}
    if targets is not None:
        dec_ids, dec_mask, _ = pad_batch(targets, pad, "right")
        inputs["decoder_input_ids"], inputs["decoder_attention_mask"] = dec_ids, dec_mask
        valid[Side.TARGET] = [torch.nonzero(m).flatten() for m in dec_mask]
    if arch.needs_output_attentions:
        inputs["output_attentions"] = True  # type: ignore[assignment]  # the one non-tensor model input
    return inputs, valid


def _run_batch(
    loaded: LoadedModel,
    arch: Architecture,
    plan: CapturePlan,
    consumer: Consumer,
    batch: range,
    inputs: dict[str, torch.Tensor],
    valid: Valid,
    block_bytes: int,
    bar: _Bar | None,
    packed: PackedBatch | None = None,
) -> None:
    """One forward over ``batch``: every asked layer's blocks go to ``consumer``, then the forward stops.

    ``packed``: the batch runs as one packed sequence (every layer up to the last asked is tapped, so
    that each text sees only its own keys)."""
    device = input_device(loaded.model)
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    addressing = LayerAddressing(arch, plan.layers if packed is None else tuple(arch.sites))
    counter = CallCounter()  # one forward: a fresh count
    head_index = {key: torch.tensor(plan.heads_of(key), dtype=torch.long) for key in plan.layers}
    remaining = set(plan.layers)

    def locate(call: AttentionCall) -> LayerKey | None:
        key = addressing.locate(call, counter)
        return key if key in remaining else None

    def done(key: LayerKey) -> None:
        if bar is not None:
            bar.update(len(batch))
        remaining.discard(key)
        if not remaining:
            raise _StopForward

    def observe(call: AttentionCall, proceed: Proceed) -> torch.Tensor:
        key = locate(call)
        if key is not None:
            if statistics and call.weights is not None:
                plan.record_kernel(WEIGHTS, "", key)
            elif statistics:
                plan.record_kernel(EXACT, "head distances need every weight of every row", key)
            emit_blocks(call, key, plan, consumer, batch, valid, head_index[key], block_bytes)
            done(key)
        return proceed()

    def fuse(call: AttentionCall, proceed: Proceed) -> torch.Tensor:
        key = locate(call)
        if key is None:
            return proceed()
        pooled = any(moments_to.key_cells(item, key) for item in batch)
        kernel, reason = route(call, pooled) if call.query is not None else (WEIGHTS, "")
        plan.record_kernel(kernel, reason, key)
        if kernel in (EXACT, WEIGHTS):
            emit_blocks(call, key, plan, consumer, batch, valid, head_index[key], block_bytes)
            done(key)
            return proceed()
        asks = fused_asks(call, key, plan, moments_to, batch, valid)
        out, moments = fused_attention(call, asks, block_bytes, kernel)
        for found, item in zip(moments, batch, strict=True):
            assert found is not None
            moments_to.consume_moments(
                item, key, torch.arange(len(found.rows)), found.select_heads(head_index[key])
            )
        done(key)
        return out

    def pack(call: AttentionCall, proceed: Proceed) -> torch.Tensor:
        key = locate(call)
        out = forward.layer(call, key)
        if key is not None:
            done(key)
        return out

    # Only read in ``fuse``, which is the advice only where the consumer says it takes moments.
    moments_to = cast(MomentConsumer, consumer)
    statistics = bool(getattr(consumer, "wants_moments", False))
    if packed is not None:
        forward = PackedForward(plan, consumer, batch, packed, head_index, block_bytes)
        advice = pack
    else:
        advice = fuse if takes_moments(consumer) else observe
    # _StopForward: the last asked layer is done, and deeper layers are not needed.
    with torch.inference_mode(), addressing.intercept(advice), suppress(_StopForward):
        forward_module(loaded.model)(**inputs, use_cache=False)
    if remaining:
        missing = ", ".join(k.name for k in sorted(remaining, key=lambda k: k.sort_key))
        raise HeadmapError(
            f"the forward pass never reached {missing}: the model skipped these attention modules"
        )


def takes_moments(consumer: Consumer) -> bool:
    """Whether a padded batch hands this consumer fused moments: it asks for them and not for whole
    rows (head distances need every weight, which only a packed batch's compiled kernel returns)."""
    return bool(getattr(consumer, "wants_moments", False)) and not getattr(consumer, "wants_maps", False)


def _progress(enabled: bool, total: int) -> _Bar | None:
    if not enabled:
        return None
    from tqdm.auto import tqdm  # optional: imported only when a progress bar is asked for

    bar: _Bar = tqdm(total=total, desc="layers", unit="layer", leave=False)
    return bar
