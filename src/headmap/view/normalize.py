"""Applying display normalizations to maps: raw (the default), top-k, sliding window, threshold,
log, renormalize.

The steps and their chain are the core value :class:`headmap.normalization.Normalization` (parsed
once from a spec such as ``"topk:3,renorm"``, rendered to a caption); this module computes them.
Every result records what it shows in ``AttentionResult.normalization`` so pictures can say it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from headmap.errors import HeadmapError
from headmap.normalization import (
    FORMS,
    LOG_FLOOR,
    LOG_MIN,
    Log,
    Normalization,
    Renorm,
    Step,
    Threshold,
    TopK,
    Window,
)
from headmap.result import AttentionResult, LayerMap


def _keep(weights: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``weights`` where ``mask`` (broadcast) is True, 0 elsewhere, in the same dtype."""
    # Multiplying by the booleans is ~5x faster than np.where and exact for finite weights.
    kept: np.ndarray = np.multiply(weights, mask, dtype=weights.dtype)
    return kept


# Up to this k, k argmax passes beat one partition (argmax is a single vectorized sweep).
_ARGMAX_MAX_K = 32


def _top_by_argmax(flat: np.ndarray, k: int) -> np.ndarray:
    """Boolean ``[row, key]`` marking the k largest of each row; argmax picks the earliest of ties."""
    work = flat.copy()  # the input is never written
    keep = np.zeros(flat.shape, dtype=bool)
    every_row = np.arange(flat.shape[0])
    for _ in range(k):  # k passes over the map, never a loop over rows
        best = work.argmax(-1)
        keep[every_row, best] = True
        work[every_row, best] = -np.inf
    return keep


def _top_by_partition(flat: np.ndarray, k: int) -> np.ndarray:
    """Same as :func:`_top_by_argmax`, through the k-th largest value of each row (large k)."""
    n_keys = flat.shape[-1]
    kth = np.partition(flat, n_keys - k, axis=-1)[:, n_keys - k, None]
    keep = flat > kth
    ties = flat == kth
    room = k - keep.sum(-1)
    tie_count = ties.sum(-1)
    # Usually the k-th value occurs once and fills the last place; only rows with more ties than
    # places need the (slow) running count that keeps the earliest of them.
    simple = tie_count <= room
    keep[simple] |= ties[simple]
    crowded = np.flatnonzero(~simple)
    if len(crowded):
        running = np.cumsum(ties[crowded], axis=-1, dtype=np.int32)
        keep[crowded] |= ties[crowded] & (running <= room[crowded, None])
    return keep


def _top_k(weights: np.ndarray, k: int) -> np.ndarray:
    """Keep the ``k`` largest weights of each row; of tied weights the earlier keys, so exactly
    ``k`` survive and pictures are reproducible."""
    n_keys = weights.shape[-1]
    if k >= n_keys:
        return weights.copy()
    flat = weights.reshape(-1, n_keys)  # [head * row, key]
    keep = _top_by_argmax(flat, k) if k <= _ARGMAX_MAX_K else _top_by_partition(flat, k)
    return _keep(weights, keep.reshape(weights.shape))


def _window(weights: np.ndarray, rows: np.ndarray, width: int) -> np.ndarray:
    """Keep keys within ``width`` positions of the query token, by index on both axes (for
    cross-attention the two axes are different texts, but the index definition is kept)."""
    keys = np.arange(weights.shape[-1])[None, :]
    queries = np.asarray(rows, dtype=np.int64)[:, None]
    # Two comparisons give the band as booleans without a [row, key] matrix of distances.
    band = (keys >= queries - width) & (keys <= queries + width)
    return _keep(weights, band)


def _log(weights: np.ndarray) -> np.ndarray:
    """``log10(max(w, 1e-6))`` in [-6, 0]."""
    # The clips only absorb float rounding (sums of pieces can reach 1 + 1e-7, and float32
    # log10 of the floor is -6.0000005), so the range is exactly [-6, 0].
    logs = np.clip(weights, LOG_FLOOR, 1.0)
    np.log10(logs, out=logs)
    clipped: np.ndarray = np.clip(logs, LOG_MIN, 0.0, out=logs)
    return clipped


def _renorm(weights: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (rows that sum to 0 stay 0)."""
    totals = weights.sum(-1, keepdims=True)
    out: np.ndarray = np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0)
    return out


def apply_step(step: Step, weights: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``weights`` ``[head, row, key]`` -> a new array of that shape; ``rows`` ``[row]`` are the
    rows' query-token positions (``LayerMap.rows``). The input is never written."""
    if isinstance(step, TopK):
        return _top_k(weights, step.k)
    if isinstance(step, Window):
        return _window(weights, rows, step.width)
    if isinstance(step, Threshold):
        return _keep(weights, weights >= step.value)
    if isinstance(step, Log):
        return _log(weights)
    if isinstance(step, Renorm):
        return _renorm(weights)
    raise TypeError(f"no computation for normalization step {step!r}")


def apply_normalization(norm: Normalization, weights: np.ndarray, rows: Sequence[int]) -> np.ndarray:
    """``weights`` ``[head, row, key]`` -> a new array; ``rows`` are the rows' query positions."""
    positions = np.asarray(rows, dtype=np.int64)
    out = np.empty_like(weights)
    # Head by head: top-k needs a few temporaries of the map's size, which at 8k tokens are
    # 256 MB per head but 2.4 GB for 9 heads at once.
    for h in range(weights.shape[0]):
        head = weights[h : h + 1]
        for step in norm.steps:
            head = apply_step(step, head, positions)
        out[h] = head[0]
    return out


def parse_normalization(spec: str | Normalization) -> Normalization:
    """Parse ``"raw"``, ``"topk:3"``, ``"window:2,renorm"``, ... into a :class:`Normalization`.

    Raises :class:`HeadmapError` naming the valid forms for anything else.
    """
    return Normalization.parse(spec)


def describe_normalization(spec: str | Normalization) -> str:
    """Caption text for a spec, e.g. ``"top-3 per row, then rows renormalized"``."""
    return Normalization.parse(spec).caption


def normalize_result(result: AttentionResult, spec: str | Normalization) -> AttentionResult:
    """Apply ``spec`` to every layer; the input is unchanged (``"raw"`` returns it as is).

    ``normalization`` of the new result is the whole chain: an earlier non-raw one comes first
    (captioned ``"top-3 per row, then rows renormalized"``). A log10 result cannot be normalized again.
    """
    norm = Normalization.parse(spec)
    if norm.is_raw:
        return result
    if result.normalization.is_log:
        raise HeadmapError(
            f"this result already shows log10 weights ({result.normalization.caption}): apply "
            f"'{norm.spec()}' to the result before log, e.g. normalize('{norm.spec()},log')"
        )
    layers = [
        LayerMap(layer.key, layer.heads, layer.rows, apply_normalization(norm, layer.weights, layer.rows))
        for layer in result.layers
    ]
    return replace(result, layers=tuple(layers), normalization=result.normalization.then(norm))


__all__ = [
    "FORMS",
    "Log",
    "Normalization",
    "Renorm",
    "Step",
    "Threshold",
    "TopK",
    "Window",
    "apply_normalization",
    "apply_step",
    "describe_normalization",
    "normalize_result",
    "parse_normalization",
]
