"""Recompute attention weights from a tapped kernel call, for chosen heads, rows and keys.

This reproduces the eager softmax(scale * Q K^T [softcap] + bias + mask) for a block of query rows
at a time, in float32, so that memory is bounded by the block and not by the sequence squared.
"""

from __future__ import annotations

import torch

from headmap.tap import AttentionCall


def _broadcast_pick(tensor: torch.Tensor, batch: int, heads: torch.Tensor) -> torch.Tensor:
    """``tensor[batch, heads]`` for a ``[batch|1, heads|1, q, k]`` tensor, broadcasting size-1 dims."""
    picked = tensor[batch if tensor.shape[0] > 1 else 0]
    return picked[heads] if picked.shape[0] > 1 else picked[:1]


def attention_block(
    call: AttentionCall,
    batch: int,
    heads: torch.Tensor,
    rows: torch.Tensor,
    keys: torch.Tensor,
) -> torch.Tensor:
    """Attention weights ``[head, row, key]`` in float32.

    ``heads`` are query-head indices; ``rows`` and ``keys`` are positions in the (padded) sequence
    as the kernel saw it. Keys left out (padding) are excluded *before* the softmax, which equals
    the model's own result because the model masks them to zero weight anyway.
    """
    n_rep = call.query.shape[1] // call.key.shape[1]  # GQA: query head h reads kv head h // n_rep
    q = call.query[batch, heads][:, rows].float()  # [head, row, dim]
    k = call.key[batch, heads // n_rep][:, keys].float()  # [head, key, dim]
    scores = torch.matmul(q, k.transpose(1, 2)).mul_(call.scaling)  # [head, row, key]
    if call.softcap is not None:
        scores = torch.tanh(scores.div_(call.softcap)).mul_(call.softcap)
    if call.position_bias is not None:
        scores += _broadcast_pick(call.position_bias, batch, heads)[:, rows][:, :, keys].float()
    if call.mask is not None:
        mask = _broadcast_pick(call.mask, batch, heads)[:, rows][:, :, keys]
        if mask.dtype == torch.bool:
            scores.masked_fill_(~mask, torch.finfo(torch.float32).min)
        else:
            scores += mask.float().clamp(min=torch.finfo(torch.float32).min)
    else:
        visible = _implicit_visibility(call, rows, keys)
        if visible is not None:
            scores.masked_fill_(~visible, torch.finfo(torch.float32).min)
    return torch.softmax(scores, dim=-1)


def _implicit_visibility(call: AttentionCall, rows: torch.Tensor, keys: torch.Tensor) -> torch.Tensor | None:
    """The causal / sliding-window pattern a kernel applies by flag when no mask tensor is given."""
    if not call.is_causal and call.sliding_window is None:
        return None
    # Kernels align the causal pattern to the top-left when given only a flag.
    distance = rows[:, None] - keys[None, :]  # [row, key]
    visible = torch.ones_like(distance, dtype=torch.bool)
    if call.is_causal:
        visible &= distance >= 0
    if call.sliding_window is not None:
        visible &= distance < call.sliding_window
    return visible


def rows_per_block(num_heads: int, num_keys: int, budget_bytes: int) -> int:
    """How many query rows fit the budget: scores, softmax and mask temporaries are ~3 floats each."""
    return max(1, budget_bytes // max(1, num_heads * num_keys * 4 * 3))
