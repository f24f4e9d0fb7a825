"""Data for the canvas views: quantized maps, JSON that is safe inside ``<script>``, the project's
JavaScript and CSS, and colormaps as lookup tables.

Both interactive views (the notebook/standalone page and the dashboard) draw on a canvas in the
browser from numbers the page carries, so the hover can show the value of every cell. The numbers
travel compactly: each map is quantized linearly over its own range to 8 or 16 bits
(:func:`quantize`), the codes are concatenated, optionally deflated (the browser inflates them with
its own ``DecompressionStream``) and base64-encoded. :func:`dequantize` is the exact inverse the
script applies, so tests can compare what the page shows with what Python computes.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

from headmap.errors import HeadmapError
from headmap.render.static import check_cmap

#: Characters that must not appear literally in JSON inside ``<script>``: ``<``/``>`` could close
#: the element or open a comment, ``&`` an entity in XHTML, U+2028/9 end a JavaScript line in old engines.
_SCRIPT_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
BITS = (8, 16)


def script_json(data: object) -> str:
    """``data`` as JSON text that can sit inside a ``<script>`` element without ending it.

    ``ensure_ascii`` already writes U+2028/9 as escapes; they are replaced again in case a caller
    passes ``ensure_ascii=False`` output through this function in the future.
    """
    text = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    for char, escaped in _SCRIPT_UNSAFE.items():
        text = text.replace(char, escaped)
    return text


def finite_list(values: np.ndarray, digits: int = 9) -> list[float | None]:
    """Floats for JSON, rounded to ``digits`` significant digits; NaN and infinities become ``None``."""
    return [
        float(f"{v:.{digits}g}") if np.isfinite(v) else None
        for v in np.asarray(values, dtype=np.float64).ravel()
    ]


@dataclass(frozen=True)
class Quantized:
    """Maps ``[map, row, col]`` as integer codes with one linear range per map.

    ``value = lo[m] + code * step[m]`` with ``step[m] = (hi[m] - lo[m]) / (2**bits - 1)``: the
    largest error of a stored value is ``step[m] / 2``.
    """

    codes: np.ndarray  # [map, row, col] uint8 or uint16
    lo: np.ndarray  # [map] float64
    hi: np.ndarray  # [map] float64
    bits: int

    @property
    def levels(self) -> int:
        return 2**self.bits - 1

    @property
    def step(self) -> np.ndarray:
        """``[map]``: the quantization step of each map."""
        return (self.hi - self.lo) / self.levels


def quantize(maps: np.ndarray, bits: int = 16) -> Quantized:
    """Quantize ``maps`` ``[map, row, col]`` (finite values) to ``bits`` per value, map by map.

    Each map gets its own ``[lo, hi]`` (its min and max, with 0 included when all values are
    positive, as attention weights are), so a diffuse head keeps as many levels as a sharp one.
    """
    if bits not in BITS:
        raise HeadmapError(f"precision must be one of {BITS} bits, not {bits}")
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3:
        raise ValueError(f"expected [map, row, col], got shape {maps.shape}")
    if not np.isfinite(maps).all():
        raise HeadmapError("cannot quantize maps with NaN or infinite values")
    count = maps.shape[0]
    flat = maps.reshape(count, -1)
    lo = np.minimum(flat.min(-1, initial=0.0), 0.0) if flat.shape[1] else np.zeros(count)
    hi = flat.max(-1, initial=0.0) if flat.shape[1] else np.zeros(count)
    hi = np.where(hi > lo, hi, lo + 1.0)  # a constant map still needs a non-empty range
    levels = 2**bits - 1
    scaled = (maps - lo[:, None, None]) * (levels / (hi - lo))[:, None, None]
    codes = np.clip(np.rint(scaled), 0, levels).astype(np.uint8 if bits == 8 else "<u2")
    return Quantized(codes, lo, hi, bits)


def quantize_ragged(maps: Sequence[np.ndarray], bits: int) -> Quantized:
    """Maps of different shapes quantized one by one; ``codes`` is their concatenation, flat ``[cell]``."""
    parts = [quantize(np.asarray(m).reshape(1, 1, -1), bits) for m in maps]
    codes = np.concatenate([p.codes.ravel() for p in parts]) if parts else np.zeros(0, np.uint8)
    return Quantized(
        codes, np.concatenate([p.lo for p in parts]), np.concatenate([p.hi for p in parts]), bits
    )


def dequantize(quantized: Quantized) -> np.ndarray:
    """The stored values ``[map, row, col]`` float64, exactly as the page's script computes them."""
    step = quantized.step
    return quantized.lo[:, None, None] + quantized.codes.astype(np.float64) * step[:, None, None]


def dequantize_map(quantized: Quantized, index: int, offset: int, shape: tuple[int, int]) -> np.ndarray:
    """Map ``index`` of a :func:`quantize_ragged` result, which starts at cell ``offset``, as ``[row, col]``."""
    size = shape[0] * shape[1]
    codes = quantized.codes[offset : offset + size].astype(np.float64).reshape(shape)
    return quantized.lo[index] + codes * quantized.step[index]


def pack(codes: np.ndarray, deflate: bool) -> dict[str, object]:
    """Codes (any shape, uint8 or little-endian uint16) as ``{"b64", "deflate", "bits"}`` for the page."""
    raw = np.ascontiguousarray(codes).tobytes()
    if deflate:
        raw = zlib.compress(raw, 9)
    bits = 8 if codes.dtype == np.uint8 else 16
    return {"bits": bits, "deflate": deflate, "b64": base64.b64encode(raw).decode("ascii")}


def pack_quantized(quantized: Quantized, deflate: bool) -> dict[str, object]:
    """:func:`pack` plus the per-map ranges the script needs to turn codes back into values."""
    return {**pack(quantized.codes, deflate), "lo": quantized.lo.tolist(), "hi": quantized.hi.tolist()}


@cache
def colormap_lut(cmap: str) -> str:
    """A matplotlib colormap as 256 ``rrggbb`` hex colours in one string (1536 characters)."""
    import matplotlib

    colors = matplotlib.colormaps[check_cmap(cmap)](np.linspace(0.0, 1.0, 256))
    rgb = np.rint(colors[:, :3] * 255).astype(np.uint8)
    return rgb.tobytes().hex()


@cache
def asset(name: str) -> str:
    """The text of a file shipped in ``headmap/render/assets`` (the views' JavaScript and CSS)."""
    text = resources.files("headmap.render").joinpath("assets", name).read_text(encoding="utf-8")
    # Our own code goes inside <script>/<style> elements: it must never close them, nor put the
    # HTML parser in its "escaped" script states ("<!--" and "<script" inside a script do).
    lowered = text.lower()
    if any(mark in lowered for mark in ("</script", "</style", "<script", "<!--")):
        raise RuntimeError(f"asset {name} contains markup that would end or escape its element")
    return text
