"""How different two heads are (Clark et al. 2019), and the clustering and map of all heads.

The distance between heads ``a`` and ``b`` on one text is the sum over its query tokens of the
Jensen-Shannon divergence (natural log) between their rows,

    JS(p, q) = 1/2 KL(p || m) + 1/2 KL(q || m) = H(m) - (H(p) + H(q)) / 2,  m = (p + q) / 2,

which is 0 for identical rows and log 2 for rows with disjoint support; a report averages it over
texts. :func:`js_pairs` computes it for every pair of heads at once, over rows that may come from
many texts of different lengths (each row visible up to its own width), in the compiled kernel
(``capture/kernels/js_pairs.cpp``): float32 terms within a row, summed in float64 across rows,
terms of close weights summed as a series rather than as a difference of entropies. Measured
against float64, a pair's sum is off by about 2e-8 of itself (a few 1e-6 at most over hundreds of
rows of 120 keys: what rounding the maps to float32 moves it by), near-identical heads included.
Without the kernel (no compiler, ``HEADMAP_NATIVE=0``) torch computes it in float64, in chunks of
pairs whose temporaries stay within a byte budget, to about 1e-12.
"""

from __future__ import annotations

import numpy as np
import torch

from headmap.capture import native

#: Temporaries per step of the torch path. Cache-sized chunks were the fastest measured here (270
#: heads x 14 tokens: 0.22 s at 512 KiB, 0.65 s at 16 MiB, where big steps spill the cache and wake
#: thread pools).
DEFAULT_JS_BYTES = 2**19


def js_pairs(
    maps: torch.Tensor, widths: torch.Tensor | None = None, *, budget_bytes: int = DEFAULT_JS_BYTES
) -> np.ndarray:
    """``[head, head]`` float64: for each pair of heads, the sum over rows of JS between their rows.

    ``maps`` is ``[head, row, key]``; row ``r`` is a distribution over its first ``widths[r]`` keys
    (``widths`` ``[row]``, every row's full width when None) and what lies beyond is ignored, so the
    rows of many texts can be packed into one call (zero-padded to the longest, a row's width its
    text's key count or its causal visible count): the result is the plain sum over all rows. Each
    row's JS is clamped at 0 against rounding; the result is symmetric with a zero diagonal. Takes the
    compiled kernel when there is one (building it on first use), else :func:`js_pairs_torch` with
    ``budget_bytes``.
    """
    widths = _widths(maps, widths)
    kernel = native.module()
    if kernel is None:
        return js_pairs_torch(maps, widths, budget_bytes)
    # Any strides: the kernel reads them (a copy here would wake torch's thread pool for each text).
    found: torch.Tensor = kernel.js_pairs(maps.detach().to("cpu", torch.float32), widths)
    return found.numpy()


def js_pairs_torch(
    maps: torch.Tensor, widths: torch.Tensor | None = None, budget_bytes: int = DEFAULT_JS_BYTES
) -> np.ndarray:
    """:func:`js_pairs` in torch float64 (the path without the compiled kernel), ``[head, head]``.

    Uses JS = -H(m) + (H(p) + H(q)) / 2 with ``0 log 0 = 0``, per row, clamped at 0 against
    rounding; pairs are done for ``b >= a`` only, in chunks whose temporaries stay within
    ``budget_bytes``, and mirrored.
    """
    widths = _widths(maps, widths)
    p = maps.detach().to("cpu", torch.float64)
    n, rows, keys = p.shape
    p = torch.where(torch.arange(keys)[None, :] < widths[:, None], p, 0.0)  # beyond a row's width: 0
    neg_entropy = torch.xlogy(p, p).sum(-1)  # [head, row] = -H(p)
    out = torch.zeros(n, n, dtype=torch.float64)
    per_pair = max(1, rows * keys * 8 * 2)  # m and m log m of one pair, float64
    a0 = 0
    while a0 < n:
        # A block of heads a against every head b >= a0: temporaries [block, n - a0, row, key].
        block = int(max(1, min(n - a0, budget_bytes // (per_pair * (n - a0)))))
        a1 = a0 + block
        b_width = max(1, budget_bytes // (per_pair * block))
        for b0 in range(a0, n, b_width):
            b1 = min(n, b0 + b_width)
            m = (p[a0:a1, None] + p[None, b0:b1]) * 0.5
            mlogm = torch.xlogy(m, m).sum(-1)  # [block, chunk, row]
            js = 0.5 * (neg_entropy[a0:a1, None] + neg_entropy[None, b0:b1]) - mlogm
            out[a0:a1, b0:b1] = js.clamp_(min=0.0).sum(-1)
        a0 = a1
    upper = torch.triu(out, diagonal=1)
    return (upper + upper.T).numpy()


def js_row_sums(maps: torch.Tensor, budget_bytes: int = DEFAULT_JS_BYTES) -> np.ndarray:
    """``[head, head]`` float64: :func:`js_pairs` of ``maps`` ``[head, row, key]`` whose rows are all
    ``key`` wide (zeros where a key is invisible); ``budget_bytes`` bounds the torch path's steps."""
    return js_pairs(maps, budget_bytes=budget_bytes)


def _widths(maps: torch.Tensor, widths: torch.Tensor | None) -> torch.Tensor:
    """``widths`` as int64 ``[row]`` on the CPU (every row ``key`` wide when None), checked against
    ``maps`` ``[head, row, key]``."""
    if maps.dim() != 3:
        raise ValueError(f"maps must be [head, row, key], got shape {tuple(maps.shape)}")
    _, rows, keys = maps.shape
    if widths is None:
        return torch.full((rows,), keys, dtype=torch.int64)
    widths = widths.detach().to("cpu", torch.int64).contiguous()
    if widths.shape != (rows,) or (rows and (int(widths.min()) < 0 or int(widths.max()) > keys)):
        raise ValueError(f"widths must be [row] = [{rows}] values in 0..{keys}, got {tuple(widths.shape)}")
    return widths


def js_reference(p: np.ndarray, q: np.ndarray) -> float:
    """JS divergence (nats) of two distributions, the textbook way (for tests and checks)."""
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float((a[nz] * np.log(a[nz] / m[nz])).sum())

    return 0.5 * kl(p) + 0.5 * kl(q)


def near_duplicates(
    distances: np.ndarray, labels: list[str], count: int = 10
) -> list[tuple[str, str, float]]:
    """The ``count`` closest pairs of distinct heads, closest first: ``(head a, head b, distance)``."""
    n = distances.shape[0]
    rows, cols = np.triu_indices(n, 1)
    values = distances[rows, cols]
    order = np.lexsort((cols, rows, values))[:count]  # ties: by position, so the list is stable
    return [(labels[rows[i]], labels[cols[i]], float(values[i])) for i in order]


def linkage(distances: np.ndarray) -> np.ndarray:
    """Average-linkage hierarchical clustering (scipy) of heads from their distance matrix."""
    from scipy.cluster.hierarchy import linkage as scipy_linkage
    from scipy.spatial.distance import squareform

    return scipy_linkage(squareform(distances, checks=False), method="average")


def mds_embedding(distances: np.ndarray, seed: int = 0) -> np.ndarray:
    """``[head, 2]``: metric MDS (scikit-learn) on the precomputed distances, reproducible by ``seed``."""
    from sklearn.manifold import MDS

    if distances.shape[0] < 3:
        return np.zeros((distances.shape[0], 2))
    mds = MDS(n_components=2, metric="precomputed", init="classical_mds", n_init=1, random_state=seed)
    return mds.fit_transform(distances)


__all__ = [
    "DEFAULT_JS_BYTES",
    "js_pairs",
    "js_pairs_torch",
    "js_reference",
    "js_row_sums",
    "linkage",
    "mds_embedding",
    "near_duplicates",
]
