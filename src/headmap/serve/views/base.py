"""What a dashboard view is: a label, the shared controls it reads, its own controls, a draw function.

The dashboard lists its views in one typed tuple (:data:`headmap.serve.views.VIEWS`). Adding a
view is one module that defines a :class:`View` and one line in that tuple: the page builds the
view's own controls (inside a group shown only while the view is selected), passes their values
to its ``draw`` with the shared :class:`Request`, and shows the payload ``draw`` returns.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from headmap.serve.display import ViewSpec
from headmap.serve.inputs import Modality

if TYPE_CHECKING:
    from headmap.serve.workbench import Workbench


class Control(enum.Enum):
    """The shared controls a view may read; the page disables the ones the selected view ignores."""

    LAYER = "layer"
    HEAD = "head"
    WORDS = "word view"
    MASK = "masking"
    NORM = "normalization"
    CMAP = "colormap"


@dataclass(frozen=True)
class Request:
    """The shared controls' values of one request (each browser tab sends its own)."""

    model: str
    text: str
    layer: int  # position in the model's layer list (the slider), not a LayerKey
    head: int
    spec: ViewSpec
    cmap: str
    image: object = None  # the uploaded image (a path, as Gradio passes it), for image models
    audio: object = None  # the uploaded WAV clip, for speech models (the text is its transcript)
    resample: bool = False  # resample the clip to the model's rate rather than refuse another rate


#: What most views read: text only.
TEXT_ONLY = frozenset({Modality.TEXT})
#: Views whose maps mean the same for every input (a [query, key] map of any units).
ANY_INPUT = frozenset(Modality)


def no_controls() -> tuple[Any, ...]:
    return ()


@dataclass(frozen=True)
class View:
    """One view of the dashboard.

    ``controls`` builds the view's own Gradio components when the page is made (called inside the
    page's layout, in the view's group); ``draw(bench, request, values)`` gets their values in the
    same order and returns the picture's payload (:mod:`headmap.serve.payload`). Errors it raises
    as :class:`headmap.HeadmapError` are shown as a message in the page. ``takes``: the inputs it
    draws (a text, an image, a clip); the page refuses the others in one line naming the views that do.
    """

    label: str
    uses: frozenset[Control]
    draw: Callable[[Workbench, Request, Sequence[Any]], dict[str, object]]
    controls: Callable[[], tuple[Any, ...]] = no_controls
    help: str = ""
    takes: frozenset[Modality] = TEXT_ONLY
