"""One contract case: how to make a small real result, and how to load it back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headmap.render.report import Format


@dataclass(frozen=True)
class Case:
    name: str  # the result type's class name
    make: Callable[[Path], Any]  # tmp folder -> a result made from a real (tiny) model
    load: Callable[[Path], Any] | None = None  # saved path -> the result again
    load_formats: tuple[Format, ...] = ()  # the formats `load` reads back
