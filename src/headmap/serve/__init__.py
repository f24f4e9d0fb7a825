"""Stage 8, serve: the live dashboard (``headmap serve``), a Gradio page drawing on a canvas.

Gradio is imported only by :mod:`headmap.serve.app`, so the workbench (models, caches, views'
numbers) can be used and tested without it.
"""

from headmap.serve.cache import BoundedCache
from headmap.serve.display import DisplayLayer, DisplayMaps, ViewSpec
from headmap.serve.workbench import ModelInfo, Workbench

__all__ = ["BoundedCache", "DisplayLayer", "DisplayMaps", "ModelInfo", "ViewSpec", "Workbench"]
