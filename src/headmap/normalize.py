"""Display normalizations: raw (the default), top-k, sliding window, threshold, log, renormalize.

A spec such as ``"topk:3,renorm"`` is a chain applied left to right. Raw weights come first for a
reason: too much filtering washes out the subtle signals one is usually debugging, so every
picture says which normalization it shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from headmap.errors import HeadmapError
from headmap.result import AttentionResult, LayerMap

LOG_FLOOR = 1e-6
FORMS = "raw, topk:K, window:W, threshold:T, log, renorm (joined with commas, e.g. 'topk:3,renorm')"


@dataclass(frozen=True)
class Step:
    """One normalization step. ``arg`` is K, W or T for the steps that take one."""

    name: str
    arg: float | None = None

    def describe(self) -> str:
        if self.name == "topk":
            return f"top-{int(self.arg)} per row"  # type: ignore[arg-type]
        if self.name == "window":
            return f"window ±{int(self.arg)} tokens"  # type: ignore[arg-type]
        if self.name == "threshold":
            return f"weights ≥ {self.arg:g}"
        if self.name == "log":
            return f"log10 weight (floor {LOG_FLOOR:g})"
        return "rows renormalized"

    def apply(self, weights: np.ndarray, rows: Sequence[int]) -> np.ndarray:
        """``weights`` ``[head, row, key]`` -> a new array; ``rows`` are the rows' token positions."""
        if self.name == "topk":
            k = int(self.arg)  # type: ignore[arg-type]
            if k >= weights.shape[-1]:
                return weights.copy()
            # Exactly k kept per row, ties broken by position, so pictures are deterministic.
            idx = np.argpartition(-weights, k - 1, axis=-1)[..., :k]
            out = np.zeros_like(weights)
            np.put_along_axis(out, idx, np.take_along_axis(weights, idx, axis=-1), axis=-1)
            return out
        if self.name == "window":
            q = np.asarray(rows)[:, None]
            k = np.arange(weights.shape[-1])[None, :]
            return np.where(np.abs(k - q) <= self.arg, weights, 0).astype(weights.dtype)  # type: ignore[operator]
        if self.name == "threshold":
            return np.where(weights >= self.arg, weights, 0).astype(weights.dtype)  # type: ignore[operator]
        if self.name == "log":
            return np.log10(np.maximum(weights, LOG_FLOOR)).astype(weights.dtype)
        totals = weights.sum(-1, keepdims=True)
        return np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0)


@dataclass(frozen=True)
class Normalization:
    """A parsed chain of steps."""

    steps: tuple[Step, ...]

    @property
    def is_log(self) -> bool:
        """True when values are log10 weights (renderers label the colour scale accordingly)."""
        return any(s.name == "log" for s in self.steps)

    def describe(self) -> str:
        if not self.steps:
            return "raw"
        return ", then ".join(s.describe() for s in self.steps)

    def apply(self, weights: np.ndarray, rows: Sequence[int]) -> np.ndarray:
        out = weights
        for step in self.steps:
            out = step.apply(out, rows)
        return out if out is not weights else weights.copy()


def _number(name: str, text: str, integer: bool) -> float:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise HeadmapError(f"{name} takes {kind}, not {text!r}: valid forms are {FORMS}") from None
    if value < 0 or (integer and name == "topk" and value == 0):
        raise HeadmapError(f"{name}:{text} is not allowed: {name} takes a {'positive' if name == 'topk' else 'non-negative'} value")
    return value


def parse_normalization(spec: str) -> Normalization:
    """Parse ``"raw"``, ``"topk:3"``, ``"window:2,renorm"``, ... into a :class:`Normalization`."""
    steps: list[Step] = []
    for part in (p.strip() for p in spec.split(",")):
        name, _, arg = part.partition(":")
        name = name.strip().lower()
        if name in ("raw", "") and not arg:
            continue
        if name in ("topk", "window", "threshold"):
            if not arg:
                raise HeadmapError(f"{name} needs a value, e.g. '{name}:{ {'topk': 3, 'window': 2, 'threshold': 0.05}[name] }'")
            steps.append(Step(name, _number(name, arg, integer=name != "threshold")))
        elif name in ("log", "renorm") and not arg:
            steps.append(Step(name))
        else:
            raise HeadmapError(f"unknown normalization {part!r}: valid forms are {FORMS}")
    if any(s.name == "log" for s in steps[:-1]):
        raise HeadmapError("'log' must be the last step: the steps after it would work on log values")
    return Normalization(tuple(steps))


def describe_normalization(spec: str) -> str:
    """Caption text for a spec, e.g. ``"top-3 per row, then rows renormalized"``."""
    return parse_normalization(spec).describe()


def normalize_result(result: AttentionResult, spec: str) -> AttentionResult:
    """Apply ``spec`` to every layer; the result records what it shows in ``normalization``."""
    norm = parse_normalization(spec)
    if not norm.steps:
        return result
    if "log10" in result.normalization:
        raise HeadmapError("this result already shows log10 weights: normalize the raw result instead")
    layers = [LayerMap(l.key, l.heads, l.rows, norm.apply(l.weights, l.rows)) for l in result.layers]
    text = norm.describe() if result.normalization == "raw" else f"{result.normalization}, then {norm.describe()}"
    return replace(result, layers=tuple(layers), normalization=text)
