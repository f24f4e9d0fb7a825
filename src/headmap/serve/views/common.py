"""Helpers shared by the map views: the layer a slider points at, labels, caption lines."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from headmap.errors import HeadmapError, check_index
from headmap.serve.display import DisplayLayer, DisplayMaps
from headmap.serve.inputs import Item
from headmap.serve.payload import Axes
from headmap.serve.views.base import Request

if TYPE_CHECKING:
    from headmap.serve.workbench import Workbench

E = TypeVar("E", bound=enum.Enum)


def text_id(text: str) -> str:
    """A short fingerprint of the text, so a picture's key differs between texts (and tabs)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]


def source_id(request: Request) -> str:
    """The fingerprint of a request's input: its text, plus its uploads where it has any."""
    if request.image is None and request.audio is None:
        return text_id(request.text)
    return text_id(repr((request.text, str(request.image), str(request.audio), request.resample)))


def picture_key(request: Request, *parts: object) -> str:
    """``data-hm-drawn`` of the picture: model, input, view options and what is shown."""
    return "|".join(str(p) for p in (request.model, source_id(request), request.spec.label(), *parts))


def item_of(bench: Workbench, request: Request) -> Item:
    """The input of ``request`` for its model: the text, or its uploaded image or clip."""
    return bench.item(request.model, request.text, request.image, request.audio, request.resample)


def layer_at(maps: DisplayMaps, position: int) -> DisplayLayer:
    """The layer at slider ``position`` (negative counts from the end), with a clear range error."""
    return maps.layer(check_index(int(position), len(maps.keys), "layer"))


def map_axes(layer: DisplayLayer, pooled: bool) -> Axes:
    value = layer.normalization.value_label
    return Axes(f"query {layer.unit}", f"key {layer.unit}", value, log=layer.log, pooled=pooled)


def describe(layer: DisplayLayer, what: str) -> str:
    """First caption line: what is shown, in which units, under which normalization."""
    return f"{layer.key.title()} · {what} · {layer.unit}s · normalization: {layer.normalization.caption}"


def choice(options: type[E], values: Sequence[Any], default: E) -> E:
    """The option of a view's radio control (its first value; ``default`` when unset), by its label."""
    text = str(values[0]) if values and values[0] else default.value
    for option in options:
        if option.value == text:
            return option
    raise HeadmapError(f"unknown choice {text!r}: choose one of {', '.join(o.value for o in options)}")
