"""Peak-preserving reduction of long maps for display: max-pooling over square-ish blocks.

Averaging would dilute a single strong link among thousands of weak ones until it vanished from
the picture; max-pooling keeps every peak visible, and each picture says it was pooled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def pool_factor(n: int, max_size: int) -> int:
    """How many tokens share one displayed cell so that ``n`` tokens fit in ``max_size`` cells."""
    return max(1, math.ceil(n / max(1, max_size)))


def max_pool(weights: np.ndarray, factor_q: int, factor_k: int) -> np.ndarray:
    """Max over ``factor_q x factor_k`` blocks of the last two axes ``[..., query, key]``."""
    if factor_q == 1 and factor_k == 1:
        return weights
    *lead, n_q, n_k = weights.shape
    out_q, out_k = math.ceil(n_q / factor_q), math.ceil(n_k / factor_k)
    # Pad with -inf so padding never wins a max (log-scaled maps are negative).
    padded = np.full((*lead, out_q * factor_q, out_k * factor_k), -np.inf, dtype=weights.dtype)
    padded[..., :n_q, :n_k] = weights
    pooled = padded.reshape(*lead, out_q, factor_q, out_k, factor_k).max(axis=(-3, -1))
    return pooled


def downsample(weights: np.ndarray, max_size: int) -> tuple[np.ndarray, int, int]:
    """``(pooled, factor_q, factor_k)``: ``weights`` ``[..., q, k]`` reduced to at most ``max_size`` a side."""
    factor_q, factor_k = pool_factor(weights.shape[-2], max_size), pool_factor(weights.shape[-1], max_size)
    return max_pool(weights, factor_q, factor_k), factor_q, factor_k


def pooled_labels(labels: Sequence[str], factor: int) -> list[str]:
    """Labels of pooled cells: ``"first…last"`` of the tokens a cell covers."""
    if factor == 1:
        return list(labels)
    out = []
    for start in range(0, len(labels), factor):
        end = min(len(labels), start + factor) - 1
        out.append(f"{labels[start]}…{labels[end]} [{start}-{end}]")
    return out


def downsample_note(shape: tuple[int, int], factor_q: int, factor_k: int) -> str:
    """One line for the caption; empty when nothing was pooled."""
    if factor_q == 1 and factor_k == 1:
        return ""
    n_q, n_k = shape
    return (
        f"downsampled {n_q}x{n_k} -> {math.ceil(n_q / factor_q)}x{math.ceil(n_k / factor_k)} by max-pooling "
        f"{factor_q}x{factor_k} blocks (peaks preserved)"
    )
