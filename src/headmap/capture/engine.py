"""Capture attention maps: tap the asked layers, recompute their weights block by block, hand the
blocks to a consumer.

The default consumer (:class:`MapStore`) keeps the maps that were asked for; others reduce blocks
to statistics without ever holding an ``N x N`` map. Only the layers, heads and query rows asked
for are computed, and the forward pass stops after the last asked layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, Union

import numpy as np
import torch

from headmap.capture.discovery import Architecture, discover, forward_module
from headmap.capture.encoding import encode, pad_batch, pad_token_id
from headmap.errors import HeadmapError, check_index
from headmap.models import LoadedModel, load
from headmap.capture.recompute import Block, attention_block, head_states, rows_per_block
from headmap.result import AttentionResult, LayerKey, LayerMap, Stack
from headmap.capture.tap import AttentionCall, tap
from headmap.tokens import Tokens

LayerSpec = Union[int, str, LayerKey]
RowSpec = Union[None, int, slice, Sequence[int]]
DEFAULT_BLOCK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class CapturePlan:
    """What a capture computes: layers, heads, and per text its tokens and the query rows asked for.

    ``rows[item][key]`` are query-token indices of text ``item`` for layer ``key``; blocks handed
    to consumers cover them in order.
    """

    model: str
    layers: tuple[LayerKey, ...]
    heads: tuple[int, ...]
    sources: tuple[Tokens, ...]
    targets: tuple[Tokens | None, ...]
    rows: tuple[dict[LayerKey, tuple[int, ...]], ...]
    num_layers: dict[Stack, int]
    num_heads: int

    def query_tokens(self, item: int, key: LayerKey) -> Tokens:
        return self.targets[item] if key.stack in (Stack.DECODER, Stack.CROSS) else self.sources[item]  # type: ignore[return-value]

    def key_tokens(self, item: int, key: LayerKey) -> Tokens:
        return self.targets[item] if key.stack is Stack.DECODER else self.sources[item]  # type: ignore[return-value]


class Consumer(Protocol):
    """Receives attention blocks as they are computed."""

    def begin(self, plan: CapturePlan) -> None:
        """Called once before the first block."""

    keeps_scores: bool
    """True if the consumer reads :attr:`Block.scores` (costs memory; off for plain map storage)."""

    def consume(self, item: int, key: LayerKey, start: int, block: Block) -> None:
        """``block`` covers rows ``plan.rows[item][key][start : start + len(block.rows)]``."""


@dataclass
class MapStore:
    """The default consumer: keeps every block, giving ``[head, row, key]`` arrays per text and layer."""

    plan: CapturePlan | None = None
    maps: dict[tuple[int, LayerKey], np.ndarray] = field(default_factory=dict)
    keeps_scores: bool = False

    def begin(self, plan: CapturePlan) -> None:
        self.plan, self.maps = plan, {}

    def consume(self, item: int, key: LayerKey, start: int, block: Block) -> None:
        assert self.plan is not None
        out = self.maps.get((item, key))
        if out is None:
            shape = (len(self.plan.heads), len(self.plan.rows[item][key]), len(self.plan.key_tokens(item, key)))
            out = self.maps[(item, key)] = np.zeros(shape, dtype=np.float32)
        out[:, start : start + len(block.rows), : block.width] = block.weights.numpy()

    def results(self) -> list[AttentionResult]:
        assert self.plan is not None
        plan = self.plan
        return [
            AttentionResult(
                model=plan.model,
                source=plan.sources[item],
                target=plan.targets[item],
                layers=tuple(
                    LayerMap(key, plan.heads, plan.rows[item][key], self.maps[(item, key)]) for key in plan.layers
                ),
                num_layers=plan.num_layers,
                num_heads=plan.num_heads,
            )
            for item in range(len(plan.sources))
        ]


class _StopForward(Exception):
    """Raised from the tap once every asked layer is done, so deeper layers are never computed."""


def capture(
    model: LoadedModel | str,
    text: str | Sequence[str],
    *,
    layers: LayerSpec | Sequence[LayerSpec] | None = None,
    heads: int | Sequence[int] | None = None,
    rows: RowSpec = None,
    target: str | Sequence[str] | None = None,
    batch_size: int = 8,
    padding_side: str = "right",
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    progress: bool = False,
) -> AttentionResult | list[AttentionResult]:
    """Capture attention maps of ``text`` (one string -> one result, a list -> a list of results).

    ``layers``: indices (negative allowed; for encoder-decoder models an index selects that depth
    in every stack), names such as ``"cross.2"``, or None for all. ``heads``: model head numbers or
    None for all. ``rows``: query rows to keep (an index, slice or list, relative to each text;
    ``-1`` is the last token), None for all. ``target``: decoder text of encoder-decoder models
    (defaults to the input text). The model keeps its own attention implementation.
    """
    store = MapStore()
    stream(model, text, store, layers=layers, heads=heads, rows=rows, target=target, batch_size=batch_size,
           padding_side=padding_side, block_bytes=block_bytes, progress=progress)
    results = store.results()
    return results[0] if isinstance(text, str) else results


def stream(
    model: LoadedModel | str,
    text: str | Sequence[str],
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
) -> CapturePlan:
    """Run the model on ``text`` and hand every attention block of the asked layers to ``consumer``."""
    loaded = load(model) if isinstance(model, str) else model
    arch = discover(loaded.model)
    texts = [text] if isinstance(text, str) else list(text)
    if not texts:
        raise HeadmapError("no text given: pass at least one text")
    encoded = [encode(loaded.tokenizer, t, loaded.max_positions) for t in texts]
    targets = _encode_targets(loaded, arch, texts, target)
    keys = resolve_layers(arch, layers)
    head_list = resolve_heads(arch, heads)
    plan = CapturePlan(
        model=loaded.name,
        layers=keys,
        heads=head_list,
        sources=tuple(tokens for _, tokens in encoded),
        targets=tuple(tokens for _, tokens in targets) if targets else (None,) * len(texts),
        rows=tuple(
            {k: resolve_rows(rows, len((targets[i][1] if k.stack in (Stack.DECODER, Stack.CROSS) else encoded[i][1])))
             for k in keys}
            for i in range(len(texts))
        ),
        num_layers=arch.num_layers,
        num_heads=arch.num_heads,
    )
    consumer.begin(plan)
    pad = pad_token_id(loaded.tokenizer)
    bar = _progress(progress, len(keys) * len(texts))
    try:
        for first in range(0, len(texts), max(1, batch_size)):
            batch = range(first, min(len(texts), first + max(1, batch_size)))
            _run_batch(loaded, arch, plan, consumer, batch, encoded, targets, pad, padding_side, block_bytes, bar)
    finally:
        if bar is not None:
            bar.close()
    return plan


def _run_batch(loaded, arch, plan, consumer, batch, encoded, targets, pad, side, block_bytes, bar) -> None:  # type: ignore[no-untyped-def]
    if arch.is_encoder_decoder:
        side = "right"  # encoder-decoder models take no position ids, so padding must trail
    ids, mask, positions = pad_batch([encoded[i][0] for i in batch], pad, side)
    inputs: dict[str, torch.Tensor] = {"input_ids": ids, "attention_mask": mask}
    if arch.accepts_position_ids:
        inputs["position_ids"] = positions
    valid = {"source": [torch.nonzero(m).flatten() for m in mask]}
    if arch.is_encoder_decoder:
        dec_ids, dec_mask, _ = pad_batch([targets[i][0] for i in batch], pad, "right")
        inputs["decoder_input_ids"], inputs["decoder_attention_mask"] = dec_ids, dec_mask
        valid["target"] = [torch.nonzero(m).flatten() for m in dec_mask]
    module_keys = {id(arch.modules[k]): k for k in plan.layers}
    head_index = torch.tensor(plan.heads, dtype=torch.long)
    remaining = set(module_keys)

    def handle(call: AttentionCall) -> None:
        key = module_keys[id(call.module)]
        q_side = "target" if key.stack in (Stack.DECODER, Stack.CROSS) else "source"
        k_side = "target" if key.stack is Stack.DECODER else "source"
        for b, item in enumerate(batch):
            key_pos = valid[k_side][b]
            text_rows = torch.tensor(plan.rows[item][key], dtype=torch.long)
            row_pos = valid[q_side][b][text_rows]
            states = head_states(call, b, head_index, key_pos)
            step = rows_per_block(len(plan.heads), len(key_pos), block_bytes)
            for start in range(0, len(row_pos), step):
                block = attention_block(call, states, b, head_index, row_pos[start : start + step], key_pos,
                                        keep_scores=consumer.keeps_scores)
                consumer.consume(item, key, start, replace(block, rows=text_rows[start : start + step]))
            if bar is not None:
                bar.update(1)
        remaining.discard(id(call.module))
        if not remaining:
            raise _StopForward

    runner = forward_module(loaded.model)
    try:
        with torch.inference_mode(), tap(handle, [arch.modules[k] for k in plan.layers]):
            runner(**inputs, use_cache=False)
    except _StopForward:
        pass
    if remaining:
        missing = ", ".join(module_keys[m].name for m in remaining)
        raise HeadmapError(f"the forward pass never reached {missing}: the model skipped these attention modules")


def _encode_targets(loaded: LoadedModel, arch: Architecture, texts: list[str],
                    target: str | Sequence[str] | None) -> list[tuple[list[int], Tokens]]:
    """Decoder inputs of encoder-decoder models: the decoder start token, then the target's tokens."""
    if not arch.is_encoder_decoder:
        if target is not None:
            raise HeadmapError(f"{loaded.name} is not an encoder-decoder model: it takes no target text")
        return []
    wanted = texts if target is None else ([target] * len(texts) if isinstance(target, str) else list(target))
    if len(wanted) != len(texts):
        raise HeadmapError(f"got {len(wanted)} target texts for {len(texts)} texts: give one per text")
    start = loaded.model.config.decoder_start_token_id
    if start is None:
        start = pad_token_id(loaded.tokenizer)
    start_token = str(loaded.tokenizer.convert_ids_to_tokens([start])[0])  # type: ignore[attr-defined]
    out = []
    for t in wanted:
        ids, tokens = encode(loaded.tokenizer, t, loaded.max_positions)
        tokens = Tokens(
            text=tokens.text,
            tokens=(start_token, *tokens.tokens),
            offsets=((0, 0), *tokens.offsets),
            special=(True, *tokens.special),
        )
        out.append(([start, *ids], tokens))
    return out


def resolve_layers(arch: Architecture, layers: LayerSpec | Sequence[LayerSpec] | None) -> tuple[LayerKey, ...]:
    """Validated, de-duplicated layer keys in depth order."""
    if layers is None:
        return tuple(sorted(arch.modules, key=lambda k: k.sort_key))
    specs = [layers] if isinstance(layers, (int, str, LayerKey)) else list(layers)
    counts = arch.num_layers
    keys: list[LayerKey] = []
    for spec in specs:
        if isinstance(spec, str) and "." not in spec:
            try:
                spec = int(spec)
            except ValueError:
                raise HeadmapError(f"{spec!r} is not a layer: give a number or a name like 'layer.3'") from None
        if isinstance(spec, (int, np.integer)):
            stacks = list(counts)
            keys += [LayerKey(s, check_index(int(spec), counts[s], _layer_word(s))) for s in stacks]
            continue
        key = spec if isinstance(spec, LayerKey) else LayerKey.parse(spec)
        if key.stack not in counts:
            have = ", ".join(f"{n} {s.value} layers" for s, n in counts.items())
            raise HeadmapError(f"this model has no {key.stack.value} layers (it has {have})")
        keys.append(LayerKey(key.stack, check_index(key.index, counts[key.stack], _layer_word(key.stack))))
    return tuple(sorted(set(keys), key=lambda k: k.sort_key))


def _layer_word(stack: Stack) -> str:
    return "layer" if stack is Stack.SELF else f"{stack.value} layer"


def resolve_heads(arch: Architecture, heads: int | Sequence[int] | None) -> tuple[int, ...]:
    if heads is None:
        return tuple(range(arch.num_heads))
    wanted = [heads] if isinstance(heads, (int, np.integer)) else list(heads)
    if not wanted:
        raise HeadmapError("no heads asked for: pass head numbers or None for all")
    return tuple(dict.fromkeys(check_index(int(h), arch.num_heads, "head") for h in wanted))


def resolve_rows(rows: RowSpec, length: int) -> tuple[int, ...]:
    """Query-row indices for a text of ``length`` tokens."""
    if rows is None:
        return tuple(range(length))
    if isinstance(rows, slice):
        picked = tuple(range(length)[rows])
        if not picked:
            raise HeadmapError(f"row selection {rows} is empty for a text of {length} tokens")
        return picked
    wanted = [rows] if isinstance(rows, (int, np.integer)) else list(rows)
    if not wanted:
        raise HeadmapError("no query rows asked for: pass row indices, a slice, or None for all")
    return tuple(dict.fromkeys(check_index(int(r), length, "query row") for r in wanted))


def _progress(enabled: bool, total: int):  # type: ignore[no-untyped-def]
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="layers", unit="layer", leave=False)
