"""The JSON the dashboard's picture (``#hm-plot``) receives: maps, labels and caption.

``assets/heatmap.js`` (``mountPanel``) draws it on a canvas. Maps travel as 16-bit codes over each
panel's own range (a step of at most range / 65535, so the hover's four decimals are the stored
value's), small tables such as statistics as plain numbers. Labels and captions are data: the
script writes them as text nodes.

The codes do not ride in the JSON that Gradio passes around: Gradio's front end copies, compares
and serializes component values on every event, which for the 700 KB of base64 of a 512 x 512 map
cost more than everything else together. :func:`finish` publishes them as raw bytes that the page
fetches from this server (``/headmap/blob/<token>``, an unguessable token), and puts only the URL
in the JSON; without a publisher (tests, other front ends) they are inlined as base64.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from headmap.render.embed import colormap_lut, finite_list, quantize_ragged
from headmap.result import CAUSATION_WARNING

BITS = 16


@dataclass(frozen=True)
class Panel:
    """One heatmap of a picture: ``values`` ``[row, col]``."""

    title: str
    values: np.ndarray


@dataclass(frozen=True)
class Axes:
    """What the rows, columns and values of a picture are, for the hover and the colour bar."""

    row_name: str
    col_name: str
    value_name: str
    log: bool = False
    pooled: bool = False


class Tone(enum.Enum):
    """How a message in place of the picture reads: the page styles each differently."""

    ERROR = "error"  # something to fix (bad input, a failed capture): a red-barred box
    HINT = "hint"  # what to do next or what is under way: a neutral note, not an alarm


def message(text: str, tone: Tone = Tone.ERROR) -> dict[str, object]:
    """A message shown in place of the picture (bad input, a failed capture; see :func:`hint`)."""
    return {"kind": "message", "message": text, "tone": tone.value}


def hint(text: str) -> dict[str, object]:
    """A neutral note in place of the picture ("Press Show ...", "drawing...")."""
    return message(text, Tone.HINT)


def precision_note(quantized_step: float) -> str:
    return (
        f"values sent in {BITS} bits over each panel's range (this one's step is {quantized_step:.3g}); "
        "the hover shows them to 4 decimals"
    )


def maps_payload(
    key: str,
    title: str,
    panels: Sequence[Panel],
    rows: Sequence[str],
    cols: Sequence[str],
    axes: Axes,
    caption: Sequence[str],
    cmap: str,
    target: int = 560,
) -> dict[str, object]:
    """A picture of quantized maps sharing one colour scale (one panel: a head; several: a layer)."""
    quantized = quantize_ragged([p.values for p in panels], BITS)
    starts = np.cumsum([0, *(p.values.size for p in panels)])[:-1]
    return {
        "kind": "maps",
        "key": key,
        "title": title,
        "panels": [
            {"title": p.title, "shape": list(p.values.shape), "start": int(s)} for p, s in zip(panels, starts)
        ],
        "rows": list(rows),
        "cols": list(cols),
        "rowName": axes.row_name,
        "colName": axes.col_name,
        "valueName": axes.value_name,
        "log": axes.log,
        "pooled": axes.pooled,
        "cmap": colormap_lut(cmap),
        "target": target,
        "data": {
            "bits": BITS,
            "lo": quantized.lo.tolist(),
            "hi": quantized.hi.tolist(),
            "codes": quantized.codes.tobytes(),
        },
        "caption": [*caption, precision_note(float(quantized.step.max())), CAUSATION_WARNING],
    }


def table_payload(
    key: str,
    title: str,
    values: np.ndarray,
    rows: Sequence[str],
    cols: Sequence[str],
    axes: Axes,
    caption: Sequence[str],
    cmap: str,
    target: int = 360,
) -> dict[str, object]:
    """A small ``[row, col]`` table (e.g. a statistic per layer and head) as plain numbers; NaN stays empty."""
    return {
        "kind": "maps",
        "key": key,
        "title": title,
        "panels": [{"title": title, "shape": list(values.shape), "values": finite_list(values)}],
        "rows": list(rows),
        "cols": list(cols),
        "rowName": axes.row_name,
        "colName": axes.col_name,
        "valueName": axes.value_name,
        "log": axes.log,
        "pooled": False,
        "cmap": colormap_lut(cmap),
        "target": target,
        "square": False,
        "caption": [*caption, CAUSATION_WARNING],
    }


def digest(payload: dict[str, object], codes: bytes) -> str:
    """A fingerprint of everything a picture shows, so the page can skip redrawing the same one.

    Gradio may deliver one slider position twice (a trailing event of ``trigger_mode="always_last"``).
    """
    text = json.dumps({k: v for k, v in payload.items() if k != "data"}, sort_keys=True)
    return hashlib.sha1(text.encode("utf-8") + codes).hexdigest()[:20]


def finish(payload: dict[str, object], publish: Callable[[bytes], str] | None) -> dict[str, object]:
    """``payload`` made JSON-able: its codes published (``publish(bytes) -> url``) or inlined as base64."""
    data = payload.get("data")
    if not isinstance(data, dict) or "codes" not in data:
        return payload
    rest = {k: v for k, v in data.items() if k != "codes"}
    codes = data["codes"]
    assert isinstance(codes, bytes)
    moved = (
        {"url": publish(codes)} if publish is not None else {"b64": base64.b64encode(codes).decode("ascii")}
    )
    return {**payload, "digest": digest(payload, codes), "data": {**rest, "deflate": False, **moved}}
