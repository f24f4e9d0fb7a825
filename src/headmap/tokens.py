"""What a row or column of an attention map stands for: a token (or a word) of the input text, or a
patch (or prefix token: CLS, registers) of an input image."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: ``Patches.cells`` entry of a unit that is no grid patch (CLS, a distillation token, a register).
PREFIX = (-1, -1)


@dataclass(frozen=True)
class Patches:
    """Where the units of an image input lie: some prefix tokens, then a ``grid`` of patches.

    ``cells[i]`` is unit ``i``'s ``(row, col)`` in the patch grid, or :data:`PREFIX` for a prefix
    token (its label in :attr:`Tokens.tokens` says which: ``CLS``, ``DIST``, ``reg0``...).
    ``pixels`` is the image as the model saw it (after its processor's resizing and cropping, the
    normalization undone), ``uint8`` ``[height, width, channels]``, so that maps can be drawn over it.
    The same record serves any unit laid out on a grid (later: audio frames, a VLM's image tokens).
    """

    grid: tuple[int, int]
    cells: tuple[tuple[int, int], ...]
    pixels: np.ndarray = field(compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.pixels.ndim != 3 or self.pixels.dtype != np.uint8:
            raise ValueError(
                f"pixels must be uint8 [height, width, channels], not {self.pixels.dtype} {self.pixels.shape}"
            )

    @property
    def prefix(self) -> tuple[int, ...]:
        """Indices of the units that are no grid patch (CLS, registers)."""
        return tuple(i for i, cell in enumerate(self.cells) if cell == PREFIX)

    def on_grid(self, values: Sequence[float] | np.ndarray) -> np.ndarray:
        """Per-unit ``values`` laid out on the patch grid ``[rows, cols]`` (NaN where no unit lies,
        e.g. after masking); prefix units are left out."""
        out = np.full(self.grid, np.nan, dtype=np.float64)
        for value, (row, col) in zip(np.asarray(values, dtype=np.float64), self.cells):
            if (row, col) != PREFIX:
                out[row, col] = value
        return out

    def select(self, indices: Sequence[int]) -> Patches:
        return Patches(self.grid, tuple(self.cells[i] for i in indices), self.pixels)

    def to_dict(self) -> dict[str, object]:
        return {
            "grid": list(self.grid),
            "cells": [list(c) for c in self.cells],
            "pixels_shape": list(self.pixels.shape),
            "pixels": self.pixels.ravel().tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Patches:
        shape = tuple(int(n) for n in data["pixels_shape"])
        pixels = np.asarray(data["pixels"], dtype=np.uint8).reshape(shape)
        rows, cols = (int(n) for n in data["grid"])
        return cls((rows, cols), tuple((int(a), int(b)) for a, b in data["cells"]), pixels)


@dataclass(frozen=True)
class Frames:
    """Where the units of an audio input lie in time: unit ``i`` starts at ``i * seconds`` seconds.

    ``seconds`` is the time one encoder frame covers (Whisper: 0.02 s, two 10 ms mel hops after its
    stride-2 convolution); ``audible`` is how many frames hold the clip itself (the rest is the
    silence the feature extractor pads the clip with up to the model's window)."""

    seconds: float
    audible: int

    def times(self, count: int) -> np.ndarray:
        """Start time in seconds of each of ``count`` frames."""
        return np.arange(count, dtype=np.float64) * self.seconds

    def to_dict(self) -> dict[str, object]:
        return {"seconds": self.seconds, "audible": self.audible}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Frames:
        return cls(float(data["seconds"]), int(data["audible"]))


@dataclass(frozen=True)
class Tokens:
    """The units along one axis of an attention map.

    ``tokens[i]`` is the display string of unit ``i`` (untrusted text: escape before putting it in
    HTML), ``offsets[i]`` its ``(start, end)`` character span in ``text`` (``(0, 0)`` for special
    tokens that have no span), ``special[i]`` whether the tokenizer added it ([CLS], BOS, ...).
    ``unit`` is ``"token"`` for the tokenizer's pieces or ``"word"`` after word aggregation, ``"patch"``
    for an image's units, whose grid positions and pixels ``patches`` holds, ``"frame"`` for an audio
    clip's encoder frames, whose times ``frames`` holds.
    """

    text: str
    tokens: tuple[str, ...]
    offsets: tuple[tuple[int, int], ...]
    special: tuple[bool, ...]
    unit: str = "token"
    patches: Patches | None = None
    frames: Frames | None = None

    def __post_init__(self) -> None:
        n = len(self.tokens)
        if len(self.offsets) != n or len(self.special) != n:
            raise ValueError(
                f"tokens, offsets and special must have one entry per token "
                f"(got {n}, {len(self.offsets)}, {len(self.special)})"
            )
        if self.patches is not None and len(self.patches.cells) != n:
            raise ValueError(f"{len(self.patches.cells)} patch cells for {n} units")

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def plural(self) -> str:
        """The unit's name in the plural: ``tokens``, ``words``, ``patches``."""
        return f"{self.unit}es" if self.unit.endswith("ch") else f"{self.unit}s"

    def select(self, indices: Sequence[int]) -> Tokens:
        """The units at ``indices``, in that order."""
        return Tokens(
            text=self.text,
            tokens=tuple(self.tokens[i] for i in indices),
            offsets=tuple(self.offsets[i] for i in indices),
            special=tuple(self.special[i] for i in indices),
            unit=self.unit,
            patches=None if self.patches is None else self.patches.select(indices),
            frames=self.frames,
        )

    def labels(self) -> list[str]:
        """Axis labels: the token strings with their position, so repeated tokens stay distinct."""
        counts = Counter(self.tokens)
        return [f"{t}·{i}" if counts[t] > 1 else t for i, t in enumerate(self.tokens)]

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "text": self.text,
            "tokens": list(self.tokens),
            "offsets": [list(o) for o in self.offsets],
            "special": list(self.special),
            "unit": self.unit,
        }
        if self.patches is not None:  # text results keep their exact old form
            out["patches"] = self.patches.to_dict()
        if self.frames is not None:
            out["frames"] = self.frames.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tokens:
        """Inverse of :meth:`to_dict`; ``data`` is parsed JSON, so its values are untyped."""
        return cls(
            text=str(data["text"]),
            tokens=tuple(str(t) for t in data["tokens"]),
            offsets=tuple((int(a), int(b)) for a, b in data["offsets"]),
            special=tuple(bool(s) for s in data["special"]),
            unit=str(data.get("unit", "token")),
            patches=Patches.from_dict(data["patches"]) if data.get("patches") else None,
            frames=Frames.from_dict(data["frames"]) if data.get("frames") else None,
        )
