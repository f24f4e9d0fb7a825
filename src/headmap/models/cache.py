"""headmap's folder in the user cache: converted GGUF models and compiled kernels live under it."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root"]


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$HEADMAP_CACHE``, else ``$XDG_CACHE_HOME/headmap``, else ``~/.cache/headmap``."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("HEADMAP_CACHE"):
        return Path(os.environ["HEADMAP_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "headmap"
