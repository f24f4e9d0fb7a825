"""Display normalizations: raw (the default), top-k, sliding window, threshold, log, renormalize.

A spec such as ``"topk:3,renorm"`` is a chain of steps applied left to right:

``raw``          the captured weights, unchanged (the default, and the honest view: filtering
                 washes out the subtle signals one is usually debugging)
``topk:K``       keep the K largest weights of each row (exactly K, K >= 1), zero the rest
``window:W``     keep keys within W positions of the query (``|key - query| <= W``), zero the rest
``threshold:T``  zero the weights below T
``log``          log10 weights, ``log10(max(w, 1e-6))``, in [-6, 0]; must be the last step
``renorm``       divide each row by its sum (rows that sum to 0 stay 0)

Every result records what it shows in ``AttentionResult.normalization`` so pictures can say it.
"""

from __future__ import annotations

import abc
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import ClassVar

import numpy as np

from headmap.errors import HeadmapError
from headmap.result import AttentionResult, LayerMap

LOG_FLOOR = 1e-6
LOG_MIN = -6.0  # log10(LOG_FLOOR): the smallest value a log step produces
FORMS = "raw, topk:K (K >= 1), window:W (W >= 0), threshold:T (T >= 0), log, renorm"
_HINT = f"valid forms are {FORMS}, joined with commas and applied left to right (e.g. 'topk:3,renorm')"


def is_log_description(description: str) -> bool:
    """Whether a result's ``normalization`` text says its values are log10 weights."""
    return "log10" in description


def _keep(weights: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``weights`` where ``mask`` (broadcast) is True, 0 elsewhere, in the same dtype."""
    # Multiplying by the booleans is ~5x faster than np.where and exact for finite weights.
    return np.multiply(weights, mask, dtype=weights.dtype)


@dataclass(frozen=True)
class Step(abc.ABC):
    """One normalization step; subclasses implement :meth:`apply` and :meth:`describe`."""

    name: ClassVar[str] = ""

    @abc.abstractmethod
    def apply(self, weights: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``weights`` ``[head, row, key]`` -> a new array of that shape; ``rows`` ``[row]`` are the
        rows' query-token positions (``LayerMap.rows``). The input is never written."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Caption text, e.g. ``"top-3 per row"``."""

    def spec(self) -> str:
        """The spec text of this step, e.g. ``"topk:3"``: the name and the argument, if any."""
        arguments = [getattr(self, field.name) for field in fields(self)]
        return f"{self.name}:{arguments[0]:g}" if arguments else self.name


# Up to this k, k argmax passes beat one partition (argmax is a single vectorized sweep).
_ARGMAX_MAX_K = 32


def _top_by_argmax(flat: np.ndarray, k: int) -> np.ndarray:
    """Boolean ``[row, key]`` marking the k largest of each row; argmax picks the earliest of ties."""
    work = flat.copy()  # the input is never written
    keep = np.zeros(flat.shape, dtype=bool)
    every_row = np.arange(flat.shape[0])
    for _ in range(k):  # k passes over the map, never a loop over rows
        best = work.argmax(-1)
        keep[every_row, best] = True
        work[every_row, best] = -np.inf
    return keep


def _top_by_partition(flat: np.ndarray, k: int) -> np.ndarray:
    """Same as :func:`_top_by_argmax`, through the k-th largest value of each row (large k)."""
    n_keys = flat.shape[-1]
    kth = np.partition(flat, n_keys - k, axis=-1)[:, n_keys - k, None]
    keep = flat > kth
    ties = flat == kth
    room = k - keep.sum(-1)
    tie_count = ties.sum(-1)
    # Usually the k-th value occurs once and fills the last place; only rows with more ties than
    # places need the (slow) running count that keeps the earliest of them.
    simple = tie_count <= room
    keep[simple] |= ties[simple]
    crowded = np.flatnonzero(~simple)
    if len(crowded):
        running = np.cumsum(ties[crowded], axis=-1, dtype=np.int32)
        keep[crowded] |= ties[crowded] & (running <= room[crowded, None])
    return keep


@dataclass(frozen=True)
class TopK(Step):
    """Keep the ``k`` largest weights of each row. Of tied weights, the earlier keys are kept, so
    exactly ``k`` survive and pictures are reproducible."""

    k: int
    name: ClassVar[str] = "topk"

    def apply(self, weights: np.ndarray, rows: np.ndarray) -> np.ndarray:
        n_keys = weights.shape[-1]
        if self.k >= n_keys:
            return weights.copy()
        flat = weights.reshape(-1, n_keys)  # [head * row, key]
        keep = _top_by_argmax(flat, self.k) if self.k <= _ARGMAX_MAX_K else _top_by_partition(flat, self.k)
        return _keep(weights, keep.reshape(weights.shape))

    def describe(self) -> str:
        return f"top-{self.k} per row"


@dataclass(frozen=True)
class Window(Step):
    """Keep keys within ``width`` positions of the query token, by index on both axes (for
    cross-attention the two axes are different texts, but the index definition is kept)."""

    width: int
    name: ClassVar[str] = "window"

    def apply(self, weights: np.ndarray, rows: np.ndarray) -> np.ndarray:
        keys = np.arange(weights.shape[-1])[None, :]
        queries = np.asarray(rows, dtype=np.int64)[:, None]
        # Two comparisons give the band as booleans without a [row, key] matrix of distances.
        band = (keys >= queries - self.width) & (keys <= queries + self.width)
        return _keep(weights, band)

    def describe(self) -> str:
        return f"window ±{self.width} around the query"


@dataclass(frozen=True)
class Threshold(Step):
    """Zero the weights below ``value``."""

    value: float
    name: ClassVar[str] = "threshold"

    def apply(self, weights: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return _keep(weights, weights >= self.value)

    def describe(self) -> str:
        return f"weights ≥ {self.value:g}"


@dataclass(frozen=True)
class Log(Step):
    """``log10(max(w, 1e-6))``: values become log10 weights in [-6, 0], so faint structure shows.

    No step may follow: top-k, window and threshold would write 0 (a weight of 1 on this scale) and
    renormalizing log values is meaningless.
    """

    name: ClassVar[str] = "log"

    def apply(self, weights: np.ndarray, rows: np.ndarray) -> np.ndarray:
        # The clips only absorb float rounding (sums of pieces can reach 1 + 1e-7, and float32
        # log10 of the floor is -6.0000005), so the range is exactly [-6, 0].
        logs = np.clip(weights, LOG_FLOOR, 1.0)
        np.log10(logs, out=logs)
        return np.clip(logs, LOG_MIN, 0.0, out=logs)

    def describe(self) -> str:
        # "log10" is what renderers and is_log_description() look for.
        return "log10 weight (floor 1e-6)"


@dataclass(frozen=True)
class Renorm(Step):
    """Divide each row by its sum, so filtered or masked rows sum to 1 again."""

    name: ClassVar[str] = "renorm"

    def apply(self, weights: np.ndarray, rows: np.ndarray) -> np.ndarray:
        totals = weights.sum(-1, keepdims=True)
        return np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0)

    def describe(self) -> str:
        return "rows renormalized"


@dataclass(frozen=True)
class Normalization:
    """A parsed chain of steps (empty for ``"raw"``), applied left to right."""

    steps: tuple[Step, ...] = ()

    @property
    def is_raw(self) -> bool:
        return not self.steps

    @property
    def is_log(self) -> bool:
        """True when values are log10 weights: renderers label the colour scale "log10 weight"."""
        return any(isinstance(step, Log) for step in self.steps)

    def describe(self) -> str:
        """Caption text, e.g. ``"top-3 per row, then rows renormalized"``; ``"raw"`` for none."""
        return ", then ".join(step.describe() for step in self.steps) or "raw"

    def spec(self) -> str:
        """The canonical spec text, e.g. ``"topk:3,renorm"``."""
        return ",".join(step.spec() for step in self.steps) or "raw"

    def apply(self, weights: np.ndarray, rows: Sequence[int]) -> np.ndarray:
        """``weights`` ``[head, row, key]`` -> a new array; ``rows`` are the rows' query positions."""
        positions = np.asarray(rows, dtype=np.int64)
        out = np.empty_like(weights)
        # Head by head: top-k needs a few temporaries of the map's size, which at 8k tokens are
        # 256 MB per head but 2.4 GB for 9 heads at once.
        for h in range(weights.shape[0]):
            head = weights[h : h + 1]
            for step in self.steps:
                head = step.apply(head, positions)
            out[h] = head[0]
        return out


def _number(name: str, text: str, integer: bool) -> float:
    """The argument of ``name:text`` as a finite, non-negative number (a whole one if ``integer``)."""
    try:
        value = float(int(text)) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise HeadmapError(f"{name}:{text} is not valid: {name} takes {kind}; {_HINT}") from None
    if not math.isfinite(value) or value < 0:
        raise HeadmapError(f"{name}:{text} is not valid: {name} takes a finite value >= 0; {_HINT}")
    if name == "topk" and value == 0:
        raise HeadmapError(f"topk:{text} is not valid: topk keeps K >= 1 weights per row; {_HINT}")
    return value


_EXAMPLES = {"topk": "topk:3", "window": "window:2", "threshold": "threshold:0.05"}


def _parse_step(part: str) -> Step | None:
    """One comma-separated part of a spec; ``None`` for ``raw``."""
    name, colon, arg = (piece.strip() for piece in part.partition(":"))
    name = name.lower()
    if name in _EXAMPLES:
        if not arg:
            raise HeadmapError(f"{name} needs a value, e.g. '{_EXAMPLES[name]}'; {_HINT}")
        if name == "threshold":
            return Threshold(_number(name, arg, integer=False))
        value = int(_number(name, arg, integer=True))
        return TopK(value) if name == "topk" else Window(value)
    simple: dict[str, Step | None] = {"raw": None, "log": Log(), "renorm": Renorm()}
    if name in simple:
        if colon:
            raise HeadmapError(f"{name} takes no value, not {part.strip()!r}; {_HINT}")
        return simple[name]
    raise HeadmapError(f"unknown normalization {part.strip()!r}; {_HINT}")


def parse_normalization(spec: str | Normalization) -> Normalization:
    """Parse ``"raw"``, ``"topk:3"``, ``"window:2,renorm"``, ... into a :class:`Normalization`.

    Raises :class:`HeadmapError` naming the valid forms for anything else.
    """
    if isinstance(spec, Normalization):
        return spec
    if not isinstance(spec, str):
        raise HeadmapError(f"a normalization is a text such as 'topk:3', not {type(spec).__name__}; {_HINT}")
    if not spec.strip():
        return Normalization()
    parts = spec.split(",")
    if any(not part.strip() for part in parts):
        raise HeadmapError(f"empty step in normalization {spec!r}; {_HINT}")
    steps = [step for step in map(_parse_step, parts) if step is not None]
    for before, after in itertools.pairwise(steps):
        if isinstance(before, Log):
            raise HeadmapError(
                f"'{after.spec()}' cannot follow 'log' in {spec!r}: log must be the last step, "
                "because the steps after it would work on log10 values; put it last, "
                "e.g. 'topk:3,renorm,log'"
            )
    return Normalization(tuple(steps))


def describe_normalization(spec: str | Normalization) -> str:
    """Caption text for a spec, e.g. ``"top-3 per row, then rows renormalized"``."""
    return parse_normalization(spec).describe()


def normalize_result(result: AttentionResult, spec: str | Normalization) -> AttentionResult:
    """Apply ``spec`` to every layer; the input is unchanged (``"raw"`` returns it as is).

    ``normalization`` of the new result describes the whole chain: an earlier non-raw one comes
    first (``"top-3 per row, then rows renormalized"``). A log10 result cannot be normalized again.
    """
    norm = parse_normalization(spec)
    if norm.is_raw:
        return result
    if is_log_description(result.normalization):
        raise HeadmapError(
            f"this result already shows log10 weights ({result.normalization}): apply "
            f"'{norm.spec()}' to the result before log, e.g. normalize('{norm.spec()},log')"
        )
    layers = [
        LayerMap(layer.key, layer.heads, layer.rows, norm.apply(layer.weights, layer.rows))
        for layer in result.layers
    ]
    text = norm.describe()
    if result.normalization != "raw":
        text = f"{result.normalization}, then {text}"
    return replace(result, layers=tuple(layers), normalization=text)
