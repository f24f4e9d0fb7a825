"""Peak-preserving reduction of long maps for display: max-pooling over rectangular blocks.

Averaging would dilute a single strong link among thousands of weak ones until it vanished from
the picture; max-pooling keeps every peak visible, and each picture says that it was pooled.
The helpers here also turn token strings into axis labels: pooled ranges (``"the…cat [0-15]"``),
thinned ticks, and control characters made visible. :func:`prepare` does all of it for one layer
of a result, for both the static and the HTML renderers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from headmap.errors import HeadmapError, check_index
from headmap.normalization import Normalization
from headmap.result import AttentionResult, LayerKey

#: Control characters that would break a label over lines or vanish; shown as escapes instead.
_VISIBLE = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x00": "\\0", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def pool_factor(n: int, max_size: int) -> int:
    """How many tokens share one displayed cell so that ``n`` tokens fit in ``max_size`` cells."""
    if max_size < 1:
        raise ValueError(f"max_size must be at least 1, not {max_size}")
    return max(1, math.ceil(n / max_size))


def _block_starts(n: int, factor: int) -> np.ndarray:
    return np.arange(0, n, factor)


def max_pool(weights: np.ndarray, factor_q: int, factor_k: int) -> np.ndarray:
    """Max over ``factor_q x factor_k`` blocks of the last two axes of ``weights`` ``[..., query, key]``.

    Returns ``[..., ceil(query / factor_q), ceil(key / factor_k)]``. The last block of an axis may
    be shorter than the factor; it is the max of the tokens it has, so no padding value (which
    would have to be below every weight, and log-scaled maps are negative) can ever win.
    """
    if factor_q < 1 or factor_k < 1:
        raise ValueError(f"pooling factors must be at least 1, got {factor_q}x{factor_k}")
    out = weights
    # Keys first: reducing along the contiguous last axis shrinks the array cheaply before the
    # strided pass over rows (about 3x faster than the other order on an 8192x8192 map).
    if factor_k > 1 and weights.shape[-1] > 0:
        out = np.maximum.reduceat(out, _block_starts(weights.shape[-1], factor_k), axis=-1)
    if factor_q > 1 and weights.shape[-2] > 0:
        out = np.maximum.reduceat(out, _block_starts(weights.shape[-2], factor_q), axis=-2)
    return out


def max_abs_pool(values: np.ndarray, factor_q: int, factor_k: int) -> np.ndarray:
    """Per block, the value of largest magnitude, sign kept, of ``values`` ``[..., query, key]``.

    For signed maps (differences) a plain max would erase every negative peak.
    """
    high = max_pool(values, factor_q, factor_k)
    low = -max_pool(-values, factor_q, factor_k)
    return np.where(-low > high, low, high)


def downsample(weights: np.ndarray, max_size: int) -> tuple[np.ndarray, int, int]:
    """Reduce ``weights`` ``[..., query, key]`` to at most ``max_size`` cells a side by max-pooling.

    Returns ``(pooled, factor_q, factor_k)`` where ``pooled`` is ``[..., query', key']`` and each
    cell is the max of a ``factor_q x factor_k`` block of tokens. Factors of 1 mean the axis fitted
    and was left alone; the input array itself is returned when nothing was pooled.
    """
    factor_q = pool_factor(weights.shape[-2], max_size)
    factor_k = pool_factor(weights.shape[-1], max_size)
    return max_pool(weights, factor_q, factor_k), factor_q, factor_k


def downsample_note(shape: tuple[int, int], factor_q: int, factor_k: int) -> str:
    """One caption line, e.g. ``"downsampled 8192x8192 -> 512x512 by max-pooling 16x16 blocks
    (peaks preserved)"``; empty when nothing was pooled. ``shape`` is the ``(query, key)`` size."""
    if factor_q == 1 and factor_k == 1:
        return ""
    n_q, n_k = shape
    return (
        f"downsampled {n_q}x{n_k} -> {math.ceil(n_q / factor_q)}x{math.ceil(n_k / factor_k)} by max-pooling "
        f"{factor_q}x{factor_k} blocks (peaks preserved)"
    )


def visible(label: str) -> str:
    """``label`` with newlines, tabs and similar shown as escapes, so it stays on one line."""
    if not any(ch in label for ch in _VISIBLE):
        return label
    return "".join(_VISIBLE.get(ch, ch) for ch in label)


def shorten(label: str, width: int) -> str:
    """``label`` cut to at most ``width`` characters, ending in ``…`` when cut."""
    if width < 1 or len(label) <= width:
        return label
    return label[: max(1, width - 1)] + "…"


def pooled_labels(
    labels: Sequence[str], factor: int, width: int | None = None, positions: bool = True
) -> list[str]:
    """Labels of pooled cells: ``"first…last"`` of the tokens a cell covers.

    ``width`` shortens each end so long tokens do not swamp the axis. With ``positions`` the
    token range is appended (``"the…cat [0-15]"``), which also keeps labels unique, as
    categorical axes need. With ``factor == 1`` the labels are returned as they are (shortened).
    """
    cut = (lambda s: shorten(s, width)) if width else (lambda s: s)
    if factor == 1:
        return [cut(label) for label in labels]
    out = []
    for start in range(0, len(labels), factor):
        end = min(len(labels), start + factor) - 1
        text = cut(labels[start]) if start == end else f"{cut(labels[start])}…{cut(labels[end])}"
        out.append(f"{text} [{start}-{end}]" if positions else text)
    return out


def tick_step(n: int, max_labels: int) -> int:
    """Show every ``step``-th of ``n`` labels so that at most ``max_labels`` are shown."""
    return max(1, math.ceil(n / max(1, max_labels)))


def thin_ticks(labels: Sequence[str], max_labels: int) -> tuple[list[int], list[str]]:
    """``(positions, labels)`` of every n-th label, at most ``max_labels`` of them (none if 0)."""
    if max_labels <= 0 or not labels:
        return [], []
    step = tick_step(len(labels), max_labels)
    positions = list(range(0, len(labels), step))
    return positions, [labels[i] for i in positions]


def axis_labels(
    labels: Sequence[str], factor: int, max_labels: int, width: int | None = 14
) -> tuple[list[int], list[str]]:
    """Tick positions and texts for one axis of a (possibly pooled) map.

    ``labels`` are the token labels before pooling (one per token), ``factor`` the pooling factor
    of the axis and ``max_labels`` how many ticks fit. Pooled cells get range labels; when still
    too many, every n-th one is shown.
    """
    cells = pooled_labels([visible(label) for label in labels], factor, width=width, positions=factor > 1)
    return thin_ticks(cells, max_labels)


# -- a layer of a result, ready to draw ----------------------------------------------------------
def color_limits(
    values: np.ndarray, normalization: Normalization, vmin: float | None, vmax: float | None
) -> tuple[float, float]:
    """Colour range: 0 to the largest weight for weights, the data range for log10 weights (which
    are negative, so the scale must not start at 0)."""
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    lo = vmin if vmin is not None else (low if normalization.is_log else min(0.0, low))
    hi = vmax if vmax is not None else high
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


@dataclass(frozen=True)
class Prepared:
    """Maps ready to draw: pooled ``values`` ``[head, query_cell, key_cell]`` and their labels."""

    values: np.ndarray
    heads: tuple[int, ...]
    row_labels: list[str]  # one per query token, before pooling
    key_labels: list[str]  # one per key token, before pooling
    factors: tuple[int, int]  # (query, key) tokens per cell
    notes: list[str]  # caption lines before the causation warning


def prepare(
    result: AttentionResult, key: LayerKey, heads: Sequence[int] | None, max_tokens: int, signed: bool = False
) -> Prepared:
    """Pick heads of ``key`` (None: all captured) and max-pool to at most ``max_tokens`` cells a side.

    ``signed`` pools by largest magnitude instead (for differences, whose negative peaks matter).
    """
    if max_tokens < 1:
        raise HeadmapError(f"max_tokens must be at least 1, not {max_tokens}")
    layer = result.layer(key)
    chosen = layer.heads if heads is None else tuple(check_index(h, result.num_heads, "head") for h in heads)
    n_q, n_k = layer.weights.shape[-2:]
    fq, fk = pool_factor(n_q, max_tokens), pool_factor(n_k, max_tokens)
    pool = max_abs_pool if signed else max_pool
    # Pool head by head: selecting heads first would copy full maps (256 MB for 8192 tokens).
    values = np.stack([pool(layer.head(h), fq, fk) for h in chosen])
    notes = [downsample_note((n_q, n_k), fq, fk)]
    if len(layer.rows) != len(result.query_tokens(layer.key)):
        notes.append(f"showing {len(layer.rows)} of {len(result.query_tokens(layer.key))} query rows")
    notes.extend(result.notes)
    rows, keys = result.row_tokens(layer), result.key_tokens(layer.key)
    # Pooled cells are labelled "first…last [i-j]": the raw tokens read better than "tok·17" there.
    return Prepared(
        values,
        tuple(chosen),
        list(rows.tokens) if fq > 1 else rows.labels(),
        list(keys.tokens) if fk > 1 else keys.labels(),
        (fq, fk),
        [n for n in notes if n],
    )


__all__ = [
    "Prepared",
    "axis_labels",
    "color_limits",
    "downsample",
    "downsample_note",
    "max_abs_pool",
    "max_pool",
    "pool_factor",
    "pooled_labels",
    "prepare",
    "shorten",
    "thin_ticks",
    "tick_step",
    "visible",
]
