"""What one text of a batch asks of a layer, in the fused kernels' terms (pure torch and compiled)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["FusedRows"]


@dataclass(frozen=True)
class FusedRows:
    """What one batch element asks of a layer.

    ``keys``: padded positions of the text's real keys, ascending; ``rows``: padded positions of
    the asked query rows; ``plan_index``: each asked row's index in the plan's rows; ``text_rows``:
    their token indices in the text; ``special``: text indices of special key tokens;
    ``key_cell``: keys per overview cell (None: no overview).
    """

    keys: torch.Tensor
    rows: torch.Tensor
    plan_index: torch.Tensor
    text_rows: torch.Tensor
    special: torch.Tensor
    cross: bool
    heads: torch.Tensor  # the asked heads (the overview averages over them)
    key_cell: int | None = None
    n_cells: int = 0
