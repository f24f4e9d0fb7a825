"""What a capture computes: the layers, heads and query rows asked for, checked against the model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from headmap.capture.discovery import Architecture
from headmap.errors import HeadmapError, check_index
from headmap.result import LayerKey, Side, Stack
from headmap.tokens import Tokens

LayerSpec = int | str | LayerKey
RowSpec = None | int | slice | Sequence[int]


COMPILED, TRITON, TORCH, EXACT, WEIGHTS = "compiled", "triton", "torch", "exact", "weights"
KERNEL_NOTES = {
    TRITON: "statistics: Triton fused kernel (each layer's attention output and statistics in one pass)",
    COMPILED: "statistics: compiled fused kernel (each layer's attention output and statistics in one pass)",
    TORCH: "statistics: fused kernel in torch (each layer's attention output and statistics in one pass)",
    EXACT: "statistics: exact recomputation after the model's own kernel",
    WEIGHTS: "statistics: from the model's own weights (eager-only attention)",
}


def layer_list(keys: Sequence[LayerKey], of: Sequence[LayerKey]) -> str:
    """``keys`` in words: "all 30 layers", or their names (runs of one stack shortened)."""
    if set(keys) == set(of):
        return f"all {len(of)} layers" if len(of) > 1 else keys[0].name
    ordered = sorted(set(keys), key=lambda k: k.sort_key)
    names = [k.name for k in ordered]
    return ", ".join(names) if len(names) <= 6 else f"{', '.join(names[:5])}, ... ({len(names)} layers)"


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
    notes: tuple[str, ...] = field(default=())
    """How the capture was made where that is not the usual dispatch tap (e.g. the eager-weights path)."""
    layer_heads: dict[LayerKey, tuple[int, ...]] = field(default_factory=dict)
    """The heads of each layer where layers have different head counts (a pruned model); else empty."""
    kernels: dict[tuple[str, str], set[LayerKey]] = field(default_factory=dict, compare=False)
    """How a statistics capture's layers were computed and why, filled in as they run:
    ``(kind, reason) -> layers`` (kinds in :data:`KERNEL_NOTES`)."""

    def record_kernel(self, kind: str, reason: str, key: LayerKey) -> None:
        """Note that layer ``key`` was computed by ``kind`` (for ``reason``, empty where it needs none)."""
        self.kernels.setdefault((kind, reason), set()).add(key)

    def kernel_notes(self) -> tuple[str, ...]:
        """One note per way the statistics' layers were computed in this run, naming the layers and why."""
        notes = []
        for (kind, reason), keys in sorted(self.kernels.items()):
            where = layer_list(sorted(keys, key=lambda k: k.sort_key), self.layers)
            notes.append(f"{KERNEL_NOTES[kind]}: {where}" + (f" ({reason})" if reason else ""))
        return tuple(notes)

    def heads_of(self, key: LayerKey) -> tuple[int, ...]:
        """The heads captured in layer ``key``."""
        return self.layer_heads.get(key, self.heads)

    def side_tokens(self, item: int, side: Side) -> Tokens:
        """Tokens of text ``item`` on ``side`` (a target exists wherever a layer has a target side)."""
        tokens = self.targets[item] if side is Side.TARGET else self.sources[item]
        assert tokens is not None
        return tokens

    def query_tokens(self, item: int, key: LayerKey) -> Tokens:
        return self.side_tokens(item, key.stack.query_side)

    def key_tokens(self, item: int, key: LayerKey) -> Tokens:
        return self.side_tokens(item, key.stack.key_side)


def resolve_layers(
    arch: Architecture, layers: LayerSpec | Sequence[LayerSpec] | None
) -> tuple[LayerKey, ...]:
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
                raise HeadmapError(
                    f"{spec!r} is not a layer: give a number or a name like 'layer.3'"
                ) from None
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


def resolve_layer_heads(
    arch: Architecture, keys: Sequence[LayerKey], heads: int | Sequence[int] | None
) -> dict[LayerKey, tuple[int, ...]]:
    """Per layer, the heads to capture where the model's layers have different head counts; else ``{}``.

    All heads (``None``) means every head of each layer; heads asked by number must exist in every
    asked layer.
    """
    if not arch.layer_heads:
        return {}
    asked = resolve_heads(arch, heads)
    out: dict[LayerKey, tuple[int, ...]] = {}
    for key in keys:
        count = arch.heads_in(key)
        if heads is None:
            out[key] = tuple(range(count))
            continue
        beyond = [h for h in asked if h >= count]
        if beyond:
            raise HeadmapError(
                f"{key.name} has only {count} heads (its layers differ, as in a pruned model): "
                f"head {beyond[0]} is not there; ask for heads below {count}, or for all heads"
            )
        out[key] = asked
    return out


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
