"""Per-row reductions of attention ("moments"): everything the per-head statistics need, per query row.

For a row with scores ``s_k`` and weights ``p_k = exp(s_k - L)`` (``L`` the row's logsumexp):

- ``log_z``       ``L``;
- ``mean_score``  ``sum_k p_k s_k``, so the entropy is ``L - mean_score`` (no log of any weight);
- ``p_max``       the largest weight (confidence);
- ``p_first``, ``p_special``, ``p_diag``, ``p_prev``, ``p_next``: the weight on the first key, on
  special keys, on the query token itself, on the token before it and on the one after it (NaN
  where the row has no such token);
- ``distance``    ``sum_k p_k |row - k|`` in tokens;
- ``visible``     how many keys the row may attend to.

They come either from a block of recomputed weights (:func:`block_moments`, exact path) or straight
from headmap's fused kernel (:mod:`headmap.capture.fused`), which never forms the weights in memory
at all. Positions are token indices of the text (padding excluded); for cross-attention the
position-based ones are NaN, since query and key are different texts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from headmap.capture.recompute import Block

_NAN = float("nan")
#: The ``[head, row]`` fields of :class:`RowMoments`.
MOMENT_FIELDS = (
    "log_z",
    "mean_score",
    "p_max",
    "p_first",
    "p_special",
    "p_diag",
    "p_prev",
    "p_next",
    "distance",
)


@dataclass(frozen=True)
class PositionMoments:
    """The position-based moments of some rows, each ``[head, row]`` float64: the weight on the query
    token itself, on the one before and the one after (NaN where the row has no such token), and the
    expected distance in tokens."""

    p_diag: torch.Tensor
    p_prev: torch.Tensor
    p_next: torch.Tensor
    distance: torch.Tensor

    @classmethod
    def undefined(cls, heads: int, rows: int, device: torch.device | None = None) -> PositionMoments:
        """All NaN ``[heads, rows]``: cross-attention, where query and key are different texts."""
        nan = torch.full((heads, rows), _NAN, dtype=torch.float64, device=device)
        return cls(p_diag=nan, p_prev=nan, p_next=nan, distance=nan)


@dataclass(frozen=True)
class RowMoments:
    """Moments of some query rows of one layer of one text; every field but ``rows`` and
    ``visible`` is ``[head, row]`` float64, on the device the kernel ran on (the statistics reduce
    them there); ``rows`` is on the host."""

    rows: torch.Tensor  # [row] query-token indices in the text
    log_z: torch.Tensor
    mean_score: torch.Tensor
    p_max: torch.Tensor
    p_first: torch.Tensor
    p_special: torch.Tensor
    p_diag: torch.Tensor
    p_prev: torch.Tensor
    p_next: torch.Tensor
    distance: torch.Tensor
    visible: torch.Tensor  # [row]
    pooled: torch.Tensor | None = None
    """``[row, key_cell]``: the head-mean weights max-pooled over cells of keys, where asked for."""

    @classmethod
    def of(
        cls,
        rows: torch.Tensor,
        visible: torch.Tensor,
        *,
        log_z: torch.Tensor,
        mean_score: torch.Tensor,
        p_max: torch.Tensor,
        p_first: torch.Tensor,
        p_special: torch.Tensor,
        positions: PositionMoments,
        pooled: torch.Tensor | None = None,
    ) -> RowMoments:
        """The record from its parts (the position-based moments as one :class:`PositionMoments`)."""
        return cls(
            rows=rows,
            log_z=log_z,
            mean_score=mean_score,
            p_max=p_max,
            p_first=p_first,
            p_special=p_special,
            p_diag=positions.p_diag,
            p_prev=positions.p_prev,
            p_next=positions.p_next,
            distance=positions.distance,
            visible=visible,
            pooled=pooled,
        )

    def select_heads(self, index: torch.Tensor) -> RowMoments:
        """The moments of the heads at ``index`` only."""
        index = index.to(self.log_z.device)  # the moments may be on a GPU, the plan's heads are not
        picked = {name: getattr(self, name).index_select(0, index) for name in MOMENT_FIELDS}
        return RowMoments(rows=self.rows, visible=self.visible, pooled=self.pooled, **picked)

    def slice_rows(self, start: int, stop: int) -> RowMoments:
        """The moments of rows ``start .. stop`` only (a packed batch's moments, text by text)."""
        picked = {name: getattr(self, name)[:, start:stop] for name in MOMENT_FIELDS}
        pooled = None if self.pooled is None else self.pooled[start:stop]
        return RowMoments(
            rows=self.rows[start:stop], visible=self.visible[start:stop], pooled=pooled, **picked
        )

    @property
    def entropy(self) -> torch.Tensor:
        """``[head, row]`` entropy in nats, ``L - sum_k p_k s_k`` (clamped at 0 against rounding)."""
        return (self.log_z - self.mean_score).clamp(min=0)


def block_moments(block: Block, special_keys: torch.Tensor, cross: bool, n_keys: int) -> RowMoments:
    """The :class:`RowMoments` of a block of recomputed weights (``block.scores`` must be kept).

    ``special_keys`` are the indices of the text's special key tokens, ``n_keys`` its key count.
    """
    w, rows, width = block.weights, block.rows, block.width
    device = w.device  # the block's (a GPU's blocks are reduced there); ``rows`` may be on the host
    assert block.scores is not None, "block_moments needs the block's scores (consumer.keeps_scores)"
    p_max = w.amax(-1)  # [head, row]
    # logsumexp(s) = max s - log(max p): the block already holds both, so no log over the block.
    log_z = block.scores_max.double() - p_max.double().log()
    mean_score = torch.linalg.vecdot(w, block.scores).double()
    special = special_keys[special_keys < width].to(device)
    heads, n = w.shape[0], len(rows)
    positions = PositionMoments.undefined(heads, n, device) if cross else _block_positions(block, n_keys)
    return RowMoments.of(
        rows.cpu(),
        block.visible,
        log_z=log_z,
        mean_score=mean_score,
        p_max=p_max.double(),
        p_first=w[:, :, 0].double(),
        p_special=w[:, :, special].double().sum(-1),
        positions=positions,
    )


def _block_positions(block: Block, n_keys: int) -> PositionMoments:
    """The position-based moments of a self-attention block (query and key are one text)."""
    w, width = block.weights, block.width
    device = w.device
    rows = block.rows.to(device)
    heads, n = w.shape[0], len(rows)
    positions = torch.arange(width, dtype=torch.float32, device=device)
    if block.causal:
        # Every key is at or before its row: sum_k p_k |q - k| = q - sum_k p_k k.
        distance = rows.double()[None, :] - torch.matmul(w, positions).double()
    else:
        gap = (rows[:, None].float() - positions[None, :]).abs_()  # [row, key]
        distance = torch.einsum("hrk,rk->hr", w, gap).double()
    index = torch.arange(n, device=device)
    diag = torch.zeros(heads, n, dtype=torch.float64, device=device)
    ok = rows < width
    diag[:, ok] = w[:, index[ok], rows[ok]].double()
    prev = torch.full((heads, n), _NAN, dtype=torch.float64, device=device)
    has_prev = rows >= 1
    prev[:, has_prev] = 0.0
    seen = has_prev & (rows - 1 < width)
    prev[:, seen] = w[:, index[seen], rows[seen] - 1].double()
    following = torch.full((heads, n), _NAN, dtype=torch.float64, device=device)
    has_next = rows + 1 < n_keys
    following[:, has_next] = 0.0  # beyond the block's width a weight is exactly 0
    seen = has_next & (rows + 1 < width)
    following[:, seen] = w[:, index[seen], rows[seen] + 1].double()
    return PositionMoments(p_diag=diag, p_prev=prev, p_next=following, distance=distance)


def pool_keys(mean_map: torch.Tensor, key_cell: int, n_cells: int) -> torch.Tensor:
    """``[row, key]`` -> ``[row, n_cells]``: max over each cell of ``key_cell`` keys (weights >= 0,
    so keys beyond the map, all zero, need no padding)."""
    rows, width = mean_map.shape
    pooled = torch.zeros(rows, n_cells, dtype=mean_map.dtype, device=mean_map.device)
    full = width // key_cell
    if full:
        pooled[:, :full] = mean_map[:, : full * key_cell].view(rows, full, key_cell).amax(-1)
    if width > full * key_cell:
        pooled[:, full] = mean_map[:, full * key_cell :].amax(-1)
    return pooled
