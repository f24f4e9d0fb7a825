"""What a row or column of an attention map stands for: a token (or a word) of the input text."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Tokens:
    """The units along one axis of an attention map.

    ``tokens[i]`` is the display string of unit ``i`` (untrusted text: escape before putting it in
    HTML), ``offsets[i]`` its ``(start, end)`` character span in ``text`` (``(0, 0)`` for special
    tokens that have no span), ``special[i]`` whether the tokenizer added it ([CLS], BOS, ...).
    ``unit`` is ``"token"`` for the tokenizer's pieces or ``"word"`` after word aggregation.
    """

    text: str
    tokens: tuple[str, ...]
    offsets: tuple[tuple[int, int], ...]
    special: tuple[bool, ...]
    unit: str = "token"

    def __post_init__(self) -> None:
        n = len(self.tokens)
        if len(self.offsets) != n or len(self.special) != n:
            raise ValueError(
                f"tokens, offsets and special must have one entry per token "
                f"(got {n}, {len(self.offsets)}, {len(self.special)})"
            )

    def __len__(self) -> int:
        return len(self.tokens)

    def select(self, indices: Sequence[int]) -> Tokens:
        """The units at ``indices``, in that order."""
        return Tokens(
            text=self.text,
            tokens=tuple(self.tokens[i] for i in indices),
            offsets=tuple(self.offsets[i] for i in indices),
            special=tuple(self.special[i] for i in indices),
            unit=self.unit,
        )

    def labels(self) -> list[str]:
        """Axis labels: the token strings with their position, so repeated tokens stay distinct."""
        counts = Counter(self.tokens)
        return [f"{t}·{i}" if counts[t] > 1 else t for i, t in enumerate(self.tokens)]

    def to_dict(self) -> dict[str, object]:
        return {
            "text": self.text,
            "tokens": list(self.tokens),
            "offsets": [list(o) for o in self.offsets],
            "special": list(self.special),
            "unit": self.unit,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tokens:
        """Inverse of :meth:`to_dict`; ``data`` is parsed JSON, so its values are untyped."""
        return cls(
            text=str(data["text"]),
            tokens=tuple(str(t) for t in data["tokens"]),
            offsets=tuple((int(a), int(b)) for a, b in data["offsets"]),
            special=tuple(bool(s) for s in data["special"]),
            unit=str(data.get("unit", "token")),
        )
