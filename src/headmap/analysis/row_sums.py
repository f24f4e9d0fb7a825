"""Per-head sums of the statistics over query rows, from :class:`~headmap.capture.moments.RowMoments`.

A statistic of a text is ``sum over its rows / rows counted`` (see :mod:`headmap.analysis.stats` for
the definitions); rows that do not count for one (the first token has no previous one; a row that
sees a single key has no normalized entropy) are left out of both. :func:`text_sums` reduces the
rows of a packed batch, many texts at once, in one pass: every statistic of every head of every
row, then one indexed sum by text.
"""

from __future__ import annotations

import numpy as np
import torch

from headmap.capture.moments import RowMoments

__all__ = ["STATS", "moment_sums", "text_sums"]

STATS = (
    "entropy",
    "entropy_norm",
    "distance",
    "first_share",
    "special_share",
    "confidence",
    "prev_share",
    "diag_share",
)
#: Where statistics compare positions of one text (query and key), undefined for cross-attention.
POSITIONAL = ("distance", "prev_share", "diag_share")


def _row_values(m: RowMoments, plain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values [stat, head, row], counted [stat, row])`` in :data:`STATS` order, plus next_share
    last; ``plain``: rows whose query token is not special (confidence counts those)."""
    entropy = m.entropy
    ones = torch.ones(len(m.rows), dtype=torch.bool, device=entropy.device)
    plain = plain.to(entropy.device)
    broad = m.visible > 1
    prev_ok, next_ok = ~m.p_prev[0].isnan(), ~m.p_next[0].isnan()
    columns = [
        (entropy, ones),
        (entropy / m.visible.clamp(min=2).double().log(), broad),
        (m.distance, ones),
        (m.p_first, ones),
        (m.p_special, ones),
        (m.p_max, plain),
        (m.p_prev, prev_ok),
        (m.p_diag, ones),
        (m.p_next, next_ok),
    ]
    counted = torch.stack([c for _, c in columns])  # [stat, row]
    values = torch.stack([v for v, _ in columns])  # [stat, head, row]
    return torch.where(counted[:, None, :], values, torch.zeros((), dtype=values.dtype)), counted


def text_sums(
    m: RowMoments, text_of_row: torch.Tensor, n_texts: int, special_query: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """``(sums [text, stat, head], counts [text, stat])`` float64 over the rows of ``m``, by text.

    Stats in :data:`STATS` order and then ``next_share`` (the weight on the token after the query).
    ``text_of_row`` ``[row]`` numbers each row's text (0 .. n_texts - 1); ``special_query`` ``[row]``
    whether its query token is special. A text whose rows are all special counts them all for
    confidence (as :func:`headmap.analysis.stats` does for one text). Self-attention only: a
    packed batch has no cross-attention.
    """
    device = m.p_max.device  # on a GPU the rows are reduced where they are; only the sums move
    text_of_row, special_query = text_of_row.to(device), special_query.to(device)
    plain = ~special_query
    plain_per_text = torch.zeros(n_texts, dtype=torch.long, device=device).index_add_(
        0, text_of_row, plain.long()
    )
    plain = plain | (plain_per_text[text_of_row] == 0)
    values, counted = _row_values(m, plain)
    n_stats, heads, rows = values.shape
    sums = torch.zeros(n_texts, n_stats * heads, dtype=torch.float64, device=device)
    sums.index_add_(0, text_of_row, values.permute(2, 0, 1).reshape(rows, n_stats * heads))
    counts = torch.zeros(n_texts, n_stats, dtype=torch.float64, device=device)
    counts.index_add_(0, text_of_row, counted.T.double())
    return sums.view(n_texts, n_stats, heads).cpu().numpy(), counts.cpu().numpy()


def moment_sums(
    m: RowMoments, cross: bool, special_queries: torch.Tensor
) -> dict[str, tuple[np.ndarray, float]]:
    """Per-head sums over the rows of ``m`` (one text), with the number of rows each statistic averages
    over: :data:`STATS`, then ``next_share``; ``cross``: cross-attention, where the positional
    statistics are undefined (zero rows). Reduced where the moments are (a GPU's rows stay there) and
    brought to the host in one transfer, so a layer costs the device one synchronization."""
    plain = ~special_queries[m.rows]  # both on the host: no synchronization
    if not plain.any():
        plain = torch.ones(len(m.rows), dtype=torch.bool)
    values, counted = _row_values(m, plain)  # [stat, head, row], [stat, row]
    names = (*STATS, "next_share")
    if cross:
        undefined = torch.tensor([n in (*POSITIONAL, "next_share") for n in names], device=counted.device)
        counted = counted & ~undefined[:, None]
        values = torch.where(counted[:, None, :], values, torch.zeros((), dtype=values.dtype))
    host = torch.cat([values.sum(-1), counted.sum(-1, dtype=torch.float64)[:, None]], 1).cpu().numpy()
    return {name: (host[i, :-1], float(host[i, -1])) for i, name in enumerate(names)}
