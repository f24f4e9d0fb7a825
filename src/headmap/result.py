"""The central result type: attention maps of some layers and heads, with the tokens they are over.

Everything in headmap flows through :class:`AttentionResult`: capture produces it, word aggregation,
masking and normalization return new ones (the input is never modified), rendering and saving
consume it. Arrays are numpy ``float32`` shaped ``[head, query, key]`` per layer.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from headmap.errors import HeadmapError, check_index
from headmap.normalization import RAW, Normalization
from headmap.tokens import Tokens

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Stages:
    """The functions of higher stages behind :class:`AttentionResult`'s convenience methods.

    The result type is the lowest stage, so it may not import view or render; ``headmap/__init__``
    (the public API, which imports every stage) binds them once with :func:`bind_stages`. Importing
    any ``headmap`` module runs that package initializer first, so they are always bound.
    """

    to_words: Callable[..., AttentionResult]
    mask: Callable[..., AttentionResult]
    normalize: Callable[[AttentionResult, str | Normalization], AttentionResult]
    plot_head: Callable[..., Figure]
    plot_grid: Callable[..., Figure]
    render: Callable[..., Path]
    #: ``headmap.render.attention.attention_page``: the interactive view as an HTML fragment.
    page: Callable[..., str]
    #: ``headmap.render.report.write``: the one writer behind every result's ``save``.
    write: Callable[..., Path]
    #: ``headmap.render.attention.attention_formats``: the render stage's ``Format`` members.
    formats: Callable[[AttentionResult], tuple[enum.Enum, ...]]
    #: ``headmap.storage.save_result`` (same stage, but storage imports this module).
    save_raw: Callable[..., Path]
    #: ``headmap.render.report.show``.
    show: Callable[..., None]
    #: ``headmap.render.attention.attention_dict`` / ``attention_table``.
    to_dict: Callable[[AttentionResult], dict[str, Any]]
    to_pandas: Callable[[AttentionResult], pd.DataFrame]


_bound: list[Stages] = []


def bind_stages(stages: Stages) -> None:
    """Called by ``headmap/__init__`` with the view and render functions."""
    _bound[:] = [stages]


def _stages() -> Stages:
    if not _bound:
        raise RuntimeError("headmap's stages are not bound: import headmap, not only headmap.result")
    return _bound[0]


CAUSATION_WARNING = (
    "Attention weights show where a head looks, not why the model decides: "
    "attention is correlation, not causation."
)


class Side(enum.Enum):
    """Which text of a capture an axis runs over: the input (``SOURCE``) or, for encoder-decoder
    models, the decoder's text (``TARGET``)."""

    SOURCE = "source"
    TARGET = "target"


class Stack(enum.Enum):
    """Which attention of the model a layer belongs to.

    ``SELF`` for encoder-only and decoder-only models; ``ENCODER``, ``DECODER`` (decoder
    self-attention) and ``CROSS`` (decoder queries over encoder keys) for encoder-decoder models.
    """

    SELF = "layer"
    ENCODER = "encoder"
    DECODER = "decoder"
    CROSS = "cross"

    @property
    def query_side(self) -> Side:
        """The text the queries of this stack's layers come from (the decoder's for decoder and cross)."""
        return Side.TARGET if self in (Stack.DECODER, Stack.CROSS) else Side.SOURCE

    @property
    def key_side(self) -> Side:
        """The text the keys of this stack's layers come from (cross-attention looks at the source)."""
        return Side.TARGET if self is Stack.DECODER else Side.SOURCE


@dataclass(frozen=True)
class LayerKey:
    """One attention layer: ``LayerKey(Stack.SELF, 3).name == "layer.3"``."""

    stack: Stack
    index: int

    @property
    def sort_key(self) -> tuple[int, int]:
        """Encoder before decoder before cross-attention, then by depth."""
        return (list(Stack).index(self.stack), self.index)

    @property
    def name(self) -> str:
        return f"{self.stack.value}.{self.index}"

    @classmethod
    def parse(cls, name: str) -> LayerKey:
        """Inverse of :attr:`name` (``"layer.3"``, ``"cross.0"``)."""
        prefix, _, index = name.partition(".")
        try:
            return cls(Stack(prefix), int(index))
        except ValueError as exc:
            valid = ", ".join(f"{s.value}.N" for s in Stack)
            raise HeadmapError(f"{name!r} is not a layer name: expected one of {valid}") from exc

    def title(self) -> str:
        """Human name for picture titles: ``"layer 3"``, ``"cross-attention layer 0"``."""
        words = {
            Stack.SELF: "layer",
            Stack.ENCODER: "encoder layer",
            Stack.DECODER: "decoder layer",
            Stack.CROSS: "cross-attention layer",
        }
        return f"{words[self.stack]} {self.index}"


class _Default(enum.Enum):
    FIRST = "first"


#: The default head of a picture: the first head captured in the layer shown.
FIRST = _Default.FIRST
LayerArg = int | str | LayerKey
HeadArg = int | None | _Default


@dataclass(frozen=True)
class LayerMap:
    """The captured maps of one layer.

    ``weights[h, r, k]`` is how much query token ``rows[r]`` of head ``heads[h]`` attends to key
    token ``k``. ``rows`` lists the query-token indices captured (all of them unless the capture
    asked for selected rows).
    """

    key: LayerKey
    heads: tuple[int, ...]
    rows: tuple[int, ...]
    weights: np.ndarray  # [head, query_row, key]

    def __post_init__(self) -> None:
        if self.weights.ndim != 3 or self.weights.shape[:2] != (len(self.heads), len(self.rows)):
            raise ValueError(
                f"{self.key.name}: weights of shape {self.weights.shape} do not match "
                f"{len(self.heads)} heads x {len(self.rows)} rows"
            )

    def head(self, head: int) -> np.ndarray:
        """The ``[query_row, key]`` map of one model head (by the model's head number)."""
        if head not in self.heads:
            raise HeadmapError(
                f"head {head} of {self.key.name} was not captured: captured heads are {list(self.heads)}"
            )
        one: np.ndarray = self.weights[self.heads.index(head)]  # numpy types indexing as Any
        return one


@dataclass(frozen=True)
class AttentionResult:
    """Attention maps of one text, as captured from one model.

    ``source`` holds the input tokens (the encoder's, for encoder-decoder models) and ``target`` the
    decoder tokens of encoder-decoder models. ``num_layers`` gives the model's layer count per
    stack and ``num_heads`` its query heads per layer, so pictures can say where a map sits.
    ``normalization`` is the display transform applied (:data:`~headmap.normalization.RAW` for none;
    its ``caption`` says it in words).
    """

    model: str
    source: Tokens
    layers: tuple[LayerMap, ...]
    num_layers: dict[Stack, int]
    num_heads: int
    target: Tokens | None = None
    normalization: Normalization = RAW
    notes: tuple[str, ...] = ()

    # -- lookup -----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[LayerMap]:
        return iter(self.layers)

    @property
    def keys(self) -> tuple[LayerKey, ...]:
        return tuple(layer.key for layer in self.layers)

    def layer(self, layer: int | str | LayerKey, stack: Stack | None = None) -> LayerMap:
        """A captured layer by index (``3``, ``-1``), name (``"cross.0"``) or :class:`LayerKey`."""
        key = self.resolve(layer, stack)
        for captured in self.layers:
            if captured.key == key:
                return captured
        have = ", ".join(k.name for k in self.keys) or "none"
        raise HeadmapError(f"{key.name} was not captured (captured: {have}); capture it with layers=[...]")

    def resolve(self, layer: int | str | LayerKey, stack: Stack | None = None) -> LayerKey:
        """Turn an index or name into a :class:`LayerKey`, checking it against the model's range."""
        if isinstance(layer, LayerKey):
            key = layer
        elif isinstance(layer, str):
            key = LayerKey.parse(layer) if "." in layer else LayerKey(stack or self.default_stack, int(layer))
        else:
            key = LayerKey(stack or self.default_stack, int(layer))
        if key.stack not in self.num_layers:
            raise HeadmapError(f"this model has no {key.stack.value} layers: it has {self._stacks_text()}")
        index = check_index(
            key.index,
            self.num_layers[key.stack],
            "layer" if key.stack is Stack.SELF else f"{key.stack.value} layer",
        )
        return LayerKey(key.stack, index)

    @property
    def default_stack(self) -> Stack:
        return Stack.SELF if Stack.SELF in self.num_layers else Stack.ENCODER

    def _stacks_text(self) -> str:
        return ", ".join(f"{n} {s.value} layers" for s, n in self.num_layers.items())

    def head(self, layer: int | str | LayerKey, head: int, stack: Stack | None = None) -> np.ndarray:
        """The ``[query_row, key]`` map of one head; ``head`` may be negative."""
        return self.layer(layer, stack).head(check_index(head, self.num_heads, "head"))

    def query_tokens(self, key: LayerKey) -> Tokens:
        """Tokens along the query axis of ``key`` (all of them; the layer's ``rows`` index into it)."""
        if key.stack.query_side is Side.TARGET:
            assert self.target is not None
            return self.target
        return self.source

    def key_tokens(self, key: LayerKey) -> Tokens:
        """Tokens along the key axis of ``key``."""
        if key.stack.key_side is Side.TARGET:
            assert self.target is not None
            return self.target
        return self.source

    def row_tokens(self, layer: LayerMap) -> Tokens:
        """Tokens of the captured query rows of ``layer``, in row order."""
        return self.query_tokens(layer.key).select(layer.rows)

    # -- transforms (each returns a new result) -------------------------------------------------
    def with_layers(self, layers: Sequence[LayerMap], **changes: object) -> AttentionResult:
        return replace(self, layers=tuple(layers), **changes)  # type: ignore[arg-type]  # the changes are AttentionResult fields, checked by dataclasses.replace

    def to_words(self, split_punctuation: bool = False) -> AttentionResult:
        """Aggregate sub-tokens into words: sum over a word's keys, mean over its queries."""
        return _stages().to_words(self, split_punctuation=split_punctuation)

    def mask(
        self,
        special: bool = True,
        first: bool = False,
        indices: Sequence[int] = (),
        renormalize: bool = False,
    ) -> AttentionResult:
        """Drop special tokens, the first token (a common sink) or given token indices from both axes."""
        return _stages().mask(self, special=special, first=first, indices=indices, renormalize=renormalize)

    def normalize(self, spec: str | Normalization) -> AttentionResult:
        """Apply a display normalization such as ``"topk:3"``, ``"window:2,renorm"`` or ``"log"``."""
        return _stages().normalize(self, spec)

    # -- output: the report contract (headmap.render.report.Report, registered as virtual subclass) --
    #: ``to_pandas`` gives a table, so ``.parquet`` is written too (see :meth:`formats`).
    tabular = True

    def formats(self) -> tuple[enum.Enum, ...]:
        """Every format :meth:`save` writes: ``.json``, ``.html``, pictures, ``.parquet``, ``.safetensors``."""
        return _stages().formats(self)

    def save(self, path: str | Path, **options: Any) -> Path:
        """Write the result; the extension picks the format (see :meth:`formats`). Returns ``path``.

        ``.safetensors`` keeps the maps for :func:`headmap.load_result`: ``precision="float16"`` or
        ``topk=K`` store them compactly (the loss is measured and kept). Pictures and ``.html`` take
        :meth:`figure` / :meth:`page` options (``layer``, ``head``, ...).
        """
        return _stages().write(self, path, **options)

    def _save_raw(self, path: Path, fmt: enum.Enum, **options: Any) -> None:
        _stages().save_raw(self, path, **options)

    def _title(self) -> str:
        return f"headmap: {self.model} attention maps"

    def to_dict(self) -> dict[str, Any]:
        """Everything the result holds, JSON-safe: undefined weights (NaN, infinite) become None."""
        return _stages().to_dict(self)

    def to_pandas(self) -> pd.DataFrame:
        """A long table, one row per weight: ``layer`` (name), ``head``, ``query``, ``key``, ``weight``."""
        return _stages().to_pandas(self)

    def _pick(self, layer: LayerArg | None, head: HeadArg) -> tuple[LayerKey, int | None]:
        """The layer and head a picture shows: by default the first captured layer and its first head."""
        key = self.keys[0] if layer is None else self.resolve(layer)
        return key, (self.layer(key).heads[0] if head is FIRST else head)

    def figure(self, layer: LayerArg | None = None, head: HeadArg = FIRST, **options: Any) -> Figure:
        """A matplotlib figure of one head (``head=None``: all captured heads of the layer as a grid);
        by default the first captured layer and head."""
        key, picked = self._pick(layer, head)
        if picked is None:
            return _stages().plot_grid(self, key, **options)
        return _stages().plot_head(self, key, picked, **options)

    def plot(self, layer: LayerArg | None = None, head: HeadArg = FIRST, **kwargs: Any) -> Figure:
        """The same as :meth:`figure` (the established name)."""
        return self.figure(layer, head, **kwargs)

    def page(self, layer: int | str | LayerKey | None = None, head: int | None = None, **options: Any) -> str:
        """The interactive view as a self-contained HTML fragment, starting at ``layer``/``head``."""
        return _stages().page(self, layer, head, **options)

    def show(self, layer: LayerArg | None = None, head: HeadArg = FIRST, **kwargs: Any) -> None:
        """Display the result: the interactive view in a notebook, else one head's figure in a window."""
        key, picked = self._pick(layer, head)
        _stages().show(self, layer=key, head=picked, **kwargs)

    def render(
        self, path: str | Path, layer: LayerArg | None = None, head: HeadArg = FIRST, **kwargs: object
    ) -> Path:
        """Write a picture; the format follows the extension (``.png``, ``.svg``, ``.pdf``, ``.html``)."""
        return _stages().render(self, path, *self._pick(layer, head), **kwargs)

    def _repr_html_(self) -> str:
        return self.page()

    def __repr__(self) -> str:
        layers = ", ".join(k.name for k in self.keys)
        n = len(self.source) if self.target is None else f"{len(self.source)}->{len(self.target)}"
        return (
            f"AttentionResult(model={self.model!r}, {self.source.plural}={n}, layers=[{layers}], "
            f"heads={self._heads_text()}, normalization={self.normalization.caption!r})"
        )

    def _heads_text(self) -> str:
        """The captured heads: ``all 12`` or ``[4] of 12`` (per layer where layers differ)."""
        captured = {layer.heads for layer in self.layers}
        if captured == {tuple(range(self.num_heads))}:
            return f"all {self.num_heads}"
        if len(captured) == 1:
            return f"{list(captured.pop())} of {self.num_heads}"
        per_layer = ", ".join(f"{layer.key.name}: {list(layer.heads)}" for layer in self.layers)
        return f"{{{per_layer}}} of {self.num_heads}"
