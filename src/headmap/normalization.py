"""What a result's maps show: the display normalization as a value, parsed once, rendered to a caption.

A spec such as ``"topk:3,renorm"`` is a chain of steps applied left to right:

``raw``          the captured weights, unchanged (the default, and the honest view: filtering
                 washes out the subtle signals one is usually debugging)
``topk:K``       keep the K largest weights of each row (exactly K, K >= 1), zero the rest
``window:W``     keep keys within W positions of the query (``|key - query| <= W``), zero the rest
``threshold:T``  zero the weights below T
``log``          log10 weights, ``log10(max(w, 1e-6))``, in [-6, 0]; must be the last step
``renorm``       divide each row by its sum (rows that sum to 0 stay 0)

:class:`Normalization` is the record every :class:`~headmap.result.AttentionResult` carries: renderers
ask it (:attr:`~Normalization.is_log`, :attr:`~Normalization.caption`) instead of searching caption
text. This module is a core type (results and storage hold it); applying the steps to maps is the
view stage's job (:mod:`headmap.view.normalize`).
"""

from __future__ import annotations

import abc
import itertools
import math
import re
from dataclasses import dataclass
from typing import ClassVar

from headmap.errors import HeadmapError

LOG_FLOOR = 1e-6
LOG_MIN = -6.0  # log10(LOG_FLOOR): the smallest value a log step produces
FORMS = "raw, topk:K (K >= 1), window:W (W >= 0), threshold:T (T >= 0), log, renorm"
_HINT = f"valid forms are {FORMS}, joined with commas and applied left to right (e.g. 'topk:3,renorm')"
#: Joins the captions of consecutive steps: ``"top-3 per row, then rows renormalized"``.
_THEN = ", then "


@dataclass(frozen=True)
class Step(abc.ABC):
    """One normalization step; each kind says its spec text and its caption."""

    name: ClassVar[str] = ""

    def spec(self) -> str:
        """The spec text of this step, e.g. ``"topk:3"``."""
        return self.name

    @property
    @abc.abstractmethod
    def caption(self) -> str:
        """Caption text, e.g. ``"top-3 per row"``."""


@dataclass(frozen=True)
class TopK(Step):
    """Keep the ``k`` largest weights of each row (of tied weights, the earliest keys)."""

    k: int
    name: ClassVar[str] = "topk"

    def spec(self) -> str:
        return f"{self.name}:{self.k}"

    @property
    def caption(self) -> str:
        return f"top-{self.k} per row"


@dataclass(frozen=True)
class Window(Step):
    """Keep keys within ``width`` positions of the query token."""

    width: int
    name: ClassVar[str] = "window"

    def spec(self) -> str:
        return f"{self.name}:{self.width}"

    @property
    def caption(self) -> str:
        return f"window ±{self.width} around the query"


@dataclass(frozen=True)
class Threshold(Step):
    """Zero the weights below ``value``."""

    value: float
    name: ClassVar[str] = "threshold"

    def spec(self) -> str:
        return f"{self.name}:{self.value:g}"

    @property
    def caption(self) -> str:
        return f"weights ≥ {self.value:g}"


@dataclass(frozen=True)
class Log(Step):
    """``log10(max(w, 1e-6))``: values become log10 weights in [-6, 0]. No step may follow."""

    name: ClassVar[str] = "log"

    @property
    def caption(self) -> str:
        return "log10 weight (floor 1e-6)"


@dataclass(frozen=True)
class Renorm(Step):
    """Divide each row by its sum, so filtered or masked rows sum to 1 again."""

    name: ClassVar[str] = "renorm"

    @property
    def caption(self) -> str:
        return "rows renormalized"


#: Each step's caption read back (old files store only the caption): pattern -> step.
_CAPTIONS: tuple[tuple[re.Pattern[str], type[Step]], ...] = (
    (re.compile(r"top-(\d+) per row"), TopK),
    (re.compile(r"window ±(\d+) around the query"), Window),
    (re.compile(r"weights ≥ (\S+)"), Threshold),
    (re.compile(re.escape(Log().caption)), Log),
    (re.compile(re.escape(Renorm().caption)), Renorm),
)


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

    @property
    def caption(self) -> str:
        """Caption text, e.g. ``"top-3 per row, then rows renormalized"``; ``"raw"`` for none."""
        return _THEN.join(step.caption for step in self.steps) or "raw"

    @property
    def value_label(self) -> str:
        """Colour-scale label for maps of this normalization."""
        return "log10 weight" if self.is_log else "attention weight"

    def describe(self) -> str:
        """The caption (kept for callers of the earlier method name)."""
        return self.caption

    def spec(self) -> str:
        """The canonical spec text, e.g. ``"topk:3,renorm"``."""
        return ",".join(step.spec() for step in self.steps) or "raw"

    def then(self, after: Normalization) -> Normalization:
        """This chain followed by ``after``; refused after a log step (see :class:`Log`)."""
        return Normalization.of(self.steps + after.steps, self.spec() + "," + after.spec())

    def __str__(self) -> str:
        return self.caption

    @classmethod
    def of(cls, steps: tuple[Step, ...], spec: str) -> Normalization:
        """``steps`` as a chain, refusing any step after ``log`` (``spec`` names the input in errors)."""
        for before, after in itertools.pairwise(steps):
            if isinstance(before, Log):
                raise HeadmapError(
                    f"'{after.spec()}' cannot follow 'log' in {spec!r}: log must be the last step, "
                    "because the steps after it would work on log10 values; put it last, "
                    "e.g. 'topk:3,renorm,log'"
                )
        return cls(steps)

    @classmethod
    def parse(cls, spec: str | Normalization) -> Normalization:
        """Parse ``"raw"``, ``"topk:3"``, ``"window:2,renorm"``, ...; a :class:`Normalization` as is.

        Raises :class:`HeadmapError` naming the valid forms for anything else.
        """
        if isinstance(spec, Normalization):
            return spec
        if not isinstance(spec, str):
            raise HeadmapError(
                f"a normalization is a text such as 'topk:3', not {type(spec).__name__}; {_HINT}"
            )
        if not spec.strip():
            return cls()
        parts = spec.split(",")
        if any(not part.strip() for part in parts):
            raise HeadmapError(f"empty step in normalization {spec!r}; {_HINT}")
        return cls.of(tuple(step for step in map(_parse_step, parts) if step is not None), spec)

    @classmethod
    def from_caption(cls, caption: str) -> Normalization:
        """Inverse of :attr:`caption` (saved files store the caption); ``ValueError`` if unknown."""
        if caption.strip() in ("", "raw"):
            return cls()
        steps = []
        for piece in caption.split(_THEN):
            for pattern, kind in _CAPTIONS:
                match = pattern.fullmatch(piece.strip())
                if match is None:
                    continue
                steps.append(_step(kind, match.groups()))
                break
            else:
                raise ValueError(f"unknown normalization caption {piece!r} in {caption!r}")
        return cls.of(tuple(steps), caption)


def _step(kind: type[Step], arguments: tuple[str | None, ...]) -> Step:
    """A step of ``kind`` from its caption's argument text (none for log and renorm)."""
    if kind is TopK:
        return TopK(int(str(arguments[0])))
    if kind is Window:
        return Window(int(str(arguments[0])))
    if kind is Threshold:
        return Threshold(float(str(arguments[0])))
    return kind()


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


RAW = Normalization()

__all__ = [
    "FORMS",
    "LOG_FLOOR",
    "LOG_MIN",
    "RAW",
    "Log",
    "Normalization",
    "Renorm",
    "Step",
    "Threshold",
    "TopK",
    "Window",
]
