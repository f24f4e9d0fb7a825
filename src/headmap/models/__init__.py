"""Stage 1, models: load the bundled models, local folders, GGUF files and hub ids, safely."""

from headmap.models.loading import BUNDLED, BUNDLED_INSTALL, DEFAULT_MODEL, LoadedModel, bundled_path, load

__all__ = ["BUNDLED", "BUNDLED_INSTALL", "DEFAULT_MODEL", "LoadedModel", "bundled_path", "load"]
