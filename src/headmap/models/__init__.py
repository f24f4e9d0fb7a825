"""Stage 1, models: load the bundled models, local folders, GGUF files and hub ids, safely.

The bundled names are plain data; ``LoadedModel``, ``load``, ``bundled_path`` and the device helpers
(``input_device``, ``parse_device``, ``parse_dtype``) need torch and are imported on first use
(PEP 562), so that the command line's ``--help`` can list the names quickly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from headmap.models.names import BUNDLED, BUNDLED_INSTALL, DEFAULT_MODEL, SHIPPED

if TYPE_CHECKING:
    from headmap.models.devices import input_device, parse_device, parse_dtype
    from headmap.models.loading import LoadedModel, bundled_path, load

#: Each name that needs torch, and the module it lives in.
_LAZY = {
    "LoadedModel": "headmap.models.loading",
    "bundled_path": "headmap.models.loading",
    "load": "headmap.models.loading",
    "input_device": "headmap.models.devices",
    "parse_device": "headmap.models.devices",
    "parse_dtype": "headmap.models.devices",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'headmap.models' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = [
    "BUNDLED",
    "BUNDLED_INSTALL",
    "DEFAULT_MODEL",
    "SHIPPED",
    "LoadedModel",
    "bundled_path",
    "input_device",
    "load",
    "parse_device",
    "parse_dtype",
]
