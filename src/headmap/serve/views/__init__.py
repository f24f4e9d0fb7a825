"""The dashboard's views, in the order the page offers them.

Each view is one module defining a :class:`~headmap.serve.views.base.View`; :data:`VIEWS` is the
one list the page is built from. A new view (for example attention beside attribution, or a RAG
view with its question and chunks as its own controls) is a new module and one line here.
"""

from __future__ import annotations

from headmap.serve.views import depth, explanation, generation, head, image, layer, rag, time
from headmap.serve.views.base import Control, Request, View

VIEWS: tuple[View, ...] = (
    head.VIEW,
    layer.VIEW,
    image.VIEW,
    time.VIEW,
    depth.VIEW,
    explanation.VIEW,
    rag.VIEW,
    generation.VIEW,
)

__all__ = ["VIEWS", "Control", "Request", "View"]
