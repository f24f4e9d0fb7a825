"""Stage 1, models: load the bundled models, local folders, GGUF files and hub ids, safely.

The bundled names are plain data; ``LoadedModel``, ``load`` and ``bundled_path`` need torch and are
imported on first use (PEP 562), so that the command line's ``--help`` can list the names quickly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from headmap.models.names import BUNDLED, BUNDLED_INSTALL, DEFAULT_MODEL

if TYPE_CHECKING:
    from headmap.models.loading import LoadedModel, bundled_path, load

_LOADING = ("LoadedModel", "bundled_path", "load")


def __getattr__(name: str) -> Any:
    if name not in _LOADING:
        raise AttributeError(f"module 'headmap.models' has no attribute {name!r}")
    return getattr(importlib.import_module("headmap.models.loading"), name)


__all__ = ["BUNDLED", "BUNDLED_INSTALL", "DEFAULT_MODEL", "LoadedModel", "bundled_path", "load"]
