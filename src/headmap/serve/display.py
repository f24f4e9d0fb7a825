"""What the dashboard draws: each layer's maps after the view options, pooled for the screen.

A :class:`ViewSpec` is the options that change the numbers (word view, masking, normalization),
applied in the order the CLI uses. :class:`DisplayMaps` holds, for one (model, text, view), every
layer as a :class:`DisplayLayer` (float32 ``[head, row_cell, key_cell]``, max-pooled to at most
``max_cells`` a side, with the labels of its tokens), so a slider change is a lookup.

Two ways fill it. A text whose full capture fits the budget is captured once per (model, text)
and each layer is derived from that capture on first use (switching the word view costs no
forward pass). A longer text is streamed: each layer is transformed and pooled as soon as its
blocks are complete and its full maps dropped, so memory stays at about one layer's maps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from headmap.capture import CapturePlan
from headmap.capture.recompute import Block
from headmap.normalization import Normalization
from headmap.result import AttentionResult, LayerKey, LayerMap
from headmap.view.downsample import max_pool, pooled_labels, prepare, visible
from headmap.view.normalize import parse_normalization


@dataclass(frozen=True)
class ViewSpec:
    """The view options that change the numbers: words, then masking, then normalization."""

    words: bool = False
    mask_special: bool = False
    mask_first: bool = False
    renormalize: bool = False
    norm: str = "raw"

    def __post_init__(self) -> None:
        # Canonical spec text, so "topk:3" and " topk:3 " share one cache entry; bad specs fail here.
        object.__setattr__(self, "norm", parse_normalization(self.norm).spec())

    def label(self) -> str:
        """Short text for picture keys, e.g. ``"words|hide:special,first|renorm|topk:3"``."""
        hidden = [name for name, on in (("special", self.mask_special), ("first", self.mask_first)) if on]
        parts = [
            "words" if self.words else "tokens",
            *([f"hide:{','.join(hidden)}"] if hidden else []),
            *(["renorm"] if hidden and self.renormalize else []),
            self.norm,
        ]
        return "|".join(parts)

    def apply(self, result: AttentionResult) -> AttentionResult:
        if self.words:
            result = result.to_words()
        if self.mask_special or self.mask_first:
            result = result.mask(
                special=self.mask_special, first=self.mask_first, renormalize=self.renormalize
            )
        return result.normalize(self.norm)


@dataclass(frozen=True)
class DisplayLayer:
    """One layer ready to draw. ``values`` ``[head, row_cell, key_cell]``: each cell is the max of a
    ``factors[0] x factors[1]`` block of units; ``row_units``/``col_units`` label the units before pooling."""

    key: LayerKey
    heads: tuple[int, ...]
    values: np.ndarray
    factors: tuple[int, int]
    row_units: tuple[str, ...]
    row_index: tuple[int, ...]  # each row's position on the query axis
    col_units: tuple[str, ...]
    notes: tuple[str, ...]
    unit: str
    normalization: Normalization

    @property
    def log(self) -> bool:
        return self.normalization.is_log

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes) + 64 * (len(self.row_units) + len(self.col_units))

    def labels(self, coarser: int = 1) -> tuple[list[str], list[str]]:
        """Cell labels of rows and columns, pooled ``coarser`` times more than stored.

        Single units read ``"word [i]"``; pooled cells ``"first…last [i-j]"``.
        """
        fq, fk = self.factors[0] * coarser, self.factors[1] * coarser
        rows = (
            [f"{u} [{i}]" for u, i in zip(self.row_units, self.row_index)]
            if fq == 1
            else pooled_labels(self.row_units, fq, width=16)
        )
        cols = (
            [f"{u} [{i}]" for i, u in enumerate(self.col_units)]
            if fk == 1
            else pooled_labels(self.col_units, fk, width=16)
        )
        return rows, cols

    def pooled(self, coarser: int) -> np.ndarray:
        """``values`` pooled ``coarser x coarser`` more: equal to pooling the full map by the product."""
        return max_pool(self.values, coarser, coarser) if coarser > 1 else self.values


def display_layer(result: AttentionResult, key: LayerKey, max_cells: int) -> DisplayLayer:
    """One layer of an already transformed result, max-pooled to at most ``max_cells`` a side."""
    prep = prepare(result, key, None, max_cells)
    layer = result.layer(key)
    rows = result.row_tokens(layer)
    return DisplayLayer(
        key=key,
        heads=prep.heads,
        values=np.ascontiguousarray(prep.values, dtype=np.float32),
        factors=prep.factors,
        row_units=tuple(visible(t) for t in rows.tokens),
        row_index=tuple(layer.rows),
        col_units=tuple(visible(t) for t in result.key_tokens(key).tokens),
        notes=tuple(prep.notes),
        unit=result.source.unit,
        normalization=result.normalization,
    )


@dataclass
class DisplayMaps:
    """Every layer of one (model, text, view); layers are made on first use by ``make`` when given."""

    model: str
    keys: tuple[LayerKey, ...]
    num_heads: int
    tokens: int
    budget: int  # bytes this entry may grow to (what the cache accounts)
    make: Callable[[LayerKey], DisplayLayer] | None = None
    done: dict[LayerKey, DisplayLayer] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def layer(self, index: int) -> DisplayLayer:
        key = self.keys[index]
        with self._lock:
            if key not in self.done:
                assert self.make is not None, f"{key.name} was not streamed"
                self.done[key] = self.make(key)
            return self.done[key]


def from_capture(result: AttentionResult, spec: ViewSpec, max_cells: int) -> DisplayMaps:
    """Display maps derived layer by layer, on demand, from a full capture of every layer."""

    def make(key: LayerKey) -> DisplayLayer:
        one = result.with_layers([result.layer(key)])
        return display_layer(spec.apply(one), key, max_cells)

    budget = sum(layer.weights.nbytes for layer in result.layers)
    return DisplayMaps(result.model, result.keys, result.num_heads, len(result.source), budget, make)


@dataclass
class DisplayCollector:
    """A capture consumer that turns each finished layer into a :class:`DisplayLayer` and drops its maps."""

    spec: ViewSpec
    max_cells: int
    keeps_scores: bool = False
    plan: CapturePlan | None = None
    layers: dict[LayerKey, DisplayLayer] = field(default_factory=dict)
    _buffers: dict[LayerKey, np.ndarray] = field(default_factory=dict)
    _filled: dict[LayerKey, int] = field(default_factory=dict)

    def begin(self, plan: CapturePlan) -> None:
        if len(plan.sources) != 1:
            raise ValueError("DisplayCollector takes one text at a time")
        self.plan, self.layers, self._buffers, self._filled = plan, {}, {}, {}

    def consume(self, item: int, key: LayerKey, start: int, block: Block) -> None:
        assert self.plan is not None
        rows = self.plan.rows[item][key]
        buffer = self._buffers.get(key)
        if buffer is None:
            shape = (len(self.plan.heads), len(rows), len(self.plan.key_tokens(item, key)))
            buffer = self._buffers[key] = np.zeros(shape, dtype=np.float32)
        n = len(block.rows)
        buffer[:, start : start + n, : block.width] = block.weights.numpy()
        self._filled[key] = self._filled.get(key, 0) + n
        if self._filled[key] == len(rows):
            self.layers[key] = self._finish(key, self._buffers.pop(key))

    def _finish(self, key: LayerKey, weights: np.ndarray) -> DisplayLayer:
        plan = self.plan
        assert plan is not None
        one = AttentionResult(
            model=plan.model,
            source=plan.sources[0],
            target=plan.targets[0],
            layers=(LayerMap(key, plan.heads, plan.rows[0][key], weights),),
            num_layers=plan.num_layers,
            num_heads=plan.num_heads,
            notes=plan.notes,
        )
        return display_layer(self.spec.apply(one), key, self.max_cells)

    def maps(self, tokens: int) -> DisplayMaps:
        assert self.plan is not None
        keys = tuple(self.plan.layers)
        budget = sum(layer.nbytes for layer in self.layers.values())
        return DisplayMaps(
            self.plan.model, keys, self.plan.num_heads, tokens, budget, None, dict(self.layers)
        )


def estimate_bytes(num_maps: int, tokens: int) -> int:
    """float32 bytes of ``num_maps`` full ``tokens x tokens`` maps."""
    return 4 * num_maps * tokens * tokens
