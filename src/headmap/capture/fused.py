"""Fused statistics: the layer's attention output and its per-row moments from one pass.

The exact path lets the model's SDPA kernel run and then recomputes ``Q K^T`` and the softmax for
the statistics: the scores are computed twice. In statistics mode, headmap instead computes the
layer itself, block of query rows by block:

    s = scale * Q K^T (+ softcap, bias, mask)     one matrix product
    m = max_k s,  e = exp(s - m)                   one pass
    [E V | Z | E pos] = e @ [V | 1 | pos]          one matrix product (the attention output, the
                                                   normalizer and the expected key position)

and reduces the moments the statistics need (:class:`~headmap.capture.moments.RowMoments`) from
the tile while it is in memory. The output it hands back to the model equals SDPA's up to float32
rounding (summation order), which the tests check. It is used only where that holds: float32
queries, keys and values, in eval mode; every other call takes the exact path, and the plan says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from headmap.capture.moments import MOMENT_FIELDS, RowMoments, pool_keys
from headmap.capture.recompute import _broadcast_pick, _implicit_hidden, _implicit_visible_counts, rows_per_block
from headmap.capture.tap import AttentionCall

_LOWEST = torch.finfo(torch.float32).min


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


def fusable(call: AttentionCall) -> str | None:
    """None if the fused kernel reproduces this call's output exactly, else why not."""
    if call.weights is not None or call.value is None or call.query is None or call.key is None:
        return "the model computes its weights itself"
    if any(t.dtype != torch.float32 for t in (call.query, call.key, call.value)):
        return f"the model runs in {call.query.dtype}, and only float32 attention is reproduced to float32 rounding"
    if call.module.training:
        return "the model is in training mode (attention dropout)"
    if call.query.shape[1] % call.key.shape[1]:
        return "query heads are not a multiple of key heads"
    return None


def fused_attention(call: AttentionCall, asks: list[FusedRows | None], block_bytes: int
                    ) -> tuple[torch.Tensor, list[RowMoments | None]]:
    """The layer's attention output ``[batch, query, head, dim]`` and, per batch element, the
    moments of its asked rows (None where nothing is asked)."""
    q, k, v = call.query, call.key, call.value
    assert q is not None and k is not None and v is not None
    batch, heads, n_q, dim = q.shape
    out = torch.empty(batch, n_q, heads, v.shape[-1], dtype=q.dtype, device=q.device)
    moments: list[RowMoments | None] = []
    for b in range(batch):
        ask = asks[b] if b < len(asks) else None
        out[b], found = _element(call, b, ask, block_bytes)
        moments.append(found)
    return out, moments


def _element(call: AttentionCall, b: int, ask: FusedRows | None, block_bytes: int
             ) -> tuple[torch.Tensor, RowMoments | None]:
    q, k, v = call.query, call.key, call.value
    assert q is not None and k is not None and v is not None
    heads, n_q, dim = q.shape[1:]
    kv_heads, n_k, v_dim = k.shape[1], k.shape[2], v.shape[-1]
    rep = heads // kv_heads
    device = q.device
    # Text position of every key (padding keys get 0; the mask gives them no weight).
    text_pos = torch.zeros(n_k, dtype=torch.float32, device=device)
    if ask is not None:
        text_pos[ask.keys] = torch.arange(len(ask.keys), dtype=torch.float32, device=device)
    augmented = torch.cat([v[b].float(), torch.ones(kv_heads, n_k, 1, device=device),
                           text_pos.expand(kv_heads, n_k)[..., None]], dim=-1)  # [kv, key, v_dim + 2]
    grouped = (q[b].float() * call.scaling).view(kv_heads, rep, n_q, dim)
    keys_t = k[b].float().transpose(1, 2)  # [kv, dim, key]
    out = torch.empty(n_q, heads, v_dim, dtype=q.dtype, device=device)
    step = rows_per_block(heads, n_k, block_bytes)
    wanted = _asked_positions(ask, n_q, device)
    parts: list[tuple[torch.Tensor, dict[str, torch.Tensor]]] = []
    for r0 in range(0, n_q, step):
        r1 = min(n_q, r0 + step)
        lo, hi = _key_range(call, r0, r1, n_k)
        rows = torch.arange(r0, r1, device=device)
        keys = torch.arange(lo, hi, device=device)
        scores = torch.matmul(grouped[:, :, r0:r1].reshape(kv_heads, rep * (r1 - r0), dim), keys_t[:, :, lo:hi])
        scores = _finish_scores(call, b, scores.view(heads, r1 - r0, hi - lo), rows, keys)
        top = scores.amax(-1, keepdim=True)  # [head, row, 1]
        weights = torch.exp(scores - top)  # unnormalized: the row max has weight exactly 1
        summed = torch.matmul(weights.view(kv_heads, rep * (r1 - r0), hi - lo), augmented[:, lo:hi])
        summed = summed.view(heads, r1 - r0, v_dim + 2)
        total = summed[..., v_dim]  # [head, row]
        out[r0:r1] = (summed[..., :v_dim] / total[..., None]).transpose(0, 1).to(out.dtype)
        if ask is not None:
            local = wanted[r0:r1]
            picked = torch.nonzero(local >= 0).flatten()
            if len(picked):
                parts.append((local[picked], _row_moments(call, b, ask, scores[:, picked], weights[:, picked],
                                                          top[:, picked, 0], total[:, picked],
                                                          summed[:, picked, v_dim + 1], rows[picked], keys,
                                                          text_pos[lo:hi])))
    return out, (_assemble(ask, parts) if ask is not None else None)


def _asked_positions(ask: FusedRows | None, n_q: int, device: torch.device) -> torch.Tensor:
    """``[query position]``: the index into ``ask.rows`` of each asked position, -1 elsewhere."""
    wanted = torch.full((n_q,), -1, dtype=torch.long, device=device)
    if ask is not None:
        wanted[ask.rows.to(device)] = torch.arange(len(ask.rows), device=device)
    return wanted


def _key_range(call: AttentionCall, r0: int, r1: int, n_k: int) -> tuple[int, int]:
    """The keys any of rows ``r0..r1`` may see under the implicit flags (all keys otherwise)."""
    if call.mask is not None:
        return 0, n_k
    hi = min(n_k, r1) if call.is_causal else n_k
    lo = max(0, r0 - call.sliding_window + 1) if call.sliding_window is not None else 0
    return lo, hi


def _finish_scores(call: AttentionCall, b: int, scores: torch.Tensor, rows: torch.Tensor,
                   keys: torch.Tensor) -> torch.Tensor:
    """Softcap, position bias and mask, exactly as :func:`headmap.capture.recompute.attention_block`."""
    all_heads = torch.arange(scores.shape[0], device=scores.device)
    if call.softcap is not None:
        scores = torch.tanh(scores.div_(call.softcap)).mul_(call.softcap)
    if call.position_bias is not None:
        scores += _broadcast_pick(call.position_bias, b, all_heads)[:, rows][:, :, keys].float()
    if call.mask is None:
        hidden = _implicit_hidden(call, rows, keys)
        if hidden is not None:
            scores.masked_fill_(hidden, _LOWEST)
        return scores
    mask = _broadcast_pick(call.mask, b, all_heads)[:, rows][:, :, keys]
    if mask.dtype != torch.bool:
        return scores.add_(mask.float().clamp(min=_LOWEST)).clamp_(min=_LOWEST)
    return scores.masked_fill_(~mask, _LOWEST)


def _visible(call: AttentionCall, b: int, rows: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    if call.mask is None:
        return _implicit_visible_counts(call, rows, keys)
    heads = torch.arange(call.query.shape[1], device=rows.device)  # type: ignore[union-attr]
    mask = _broadcast_pick(call.mask, b, heads)[:, rows][:, :, keys]
    visible = mask if mask.dtype == torch.bool else mask > _LOWEST / 2
    return visible.sum(-1).amax(0)


def _row_moments(call: AttentionCall, b: int, ask: FusedRows, scores: torch.Tensor, weights: torch.Tensor,
                 top: torch.Tensor, total: torch.Tensor, expected_pos: torch.Tensor, rows: torch.Tensor,
                 keys: torch.Tensor, key_text: torch.Tensor) -> dict[str, torch.Tensor]:
    """Moments of the asked rows of one block; ``weights`` are unnormalized (``[head, row, key]``)."""
    lo = int(keys[0]) if len(keys) else 0
    total64 = total.double()
    found = {
        "log_z": top.double() + total64.log(),
        "mean_score": torch.linalg.vecdot(weights, scores).double() / total64,
        "p_max": 1.0 / total64,
        "p_first": _at(weights, ask.keys[:1], lo, len(keys)).sum(-1).double() / total64,
        "p_special": _at(weights, ask.keys[ask.special], lo, len(keys)).sum(-1).double() / total64,
        "visible": _visible(call, b, rows, keys),
    }
    if ask.cross:
        nan = torch.full_like(total64, float("nan"))
        found.update(p_diag=nan, p_prev=nan, p_next=nan, distance=nan)
    else:
        index = torch.arange(len(rows), device=rows.device)
        found["p_diag"] = _pick(weights, rows - lo, index, len(keys)).double() / total64
        text_rows = torch.searchsorted(ask.keys, rows).to(torch.float64)  # query and key are one text
        previous = ask.keys[(text_rows.long() - 1).clamp(min=0)]
        prev = _pick(weights, previous - lo, index, len(keys)).double() / total64
        found["p_prev"] = torch.where(text_rows[None, :] >= 1, prev, torch.full_like(prev, float("nan")))
        last = len(ask.keys) - 1
        following = ask.keys[(text_rows.long() + 1).clamp(max=last)]
        after = _pick(weights, following - lo, index, len(keys)).double() / total64
        found["p_next"] = torch.where(text_rows[None, :] < last, after, torch.full_like(after, float("nan")))
        if call.mask is None and call.is_causal:
            found["distance"] = text_rows[None, :] - expected_pos.double() / total64
        else:
            gap = (text_rows[:, None].float() - key_text[None, :]).abs_()  # [row, key]
            found["distance"] = torch.einsum("hrk,rk->hr", weights, gap).double() / total64
    if ask.key_cell is not None:
        found["pooled"] = _pooled(weights, total, ask, keys, key_text)
    return found


def _at(weights: torch.Tensor, positions: torch.Tensor, lo: int, width: int) -> torch.Tensor:
    """``weights[..., positions - lo]`` for the positions inside the block's key range."""
    local = positions - lo
    local = local[(local >= 0) & (local < width)]
    return weights[..., local]


def _pick(weights: torch.Tensor, local: torch.Tensor, index: torch.Tensor, width: int) -> torch.Tensor:
    """``weights[h, i, local[i]]`` per row, 0 where ``local[i]`` is outside the block's keys."""
    inside = (local >= 0) & (local < width)
    picked = torch.zeros(weights.shape[:2], dtype=weights.dtype, device=weights.device)
    picked[:, inside] = weights[:, index[inside], local[inside]]
    return picked


def _pooled(weights: torch.Tensor, total: torch.Tensor, ask: FusedRows, keys: torch.Tensor,
            key_text: torch.Tensor) -> torch.Tensor:
    """``[row, cell]``: head-mean weights over the text's keys, max-pooled over key cells."""
    mean = (weights[ask.heads] / total[ask.heads, :, None]).mean(0)  # [row, key]
    real = torch.isin(keys, ask.keys)
    text_index = key_text[real].long()
    dense = torch.zeros(mean.shape[0], len(ask.keys), dtype=mean.dtype, device=mean.device)
    dense[:, text_index] = mean[:, real]
    assert ask.key_cell is not None
    return pool_keys(dense.cpu(), ask.key_cell, ask.n_cells)


def _assemble(ask: FusedRows, parts: list[tuple[torch.Tensor, dict[str, torch.Tensor]]]) -> RowMoments:
    """Join the blocks' moments into one :class:`RowMoments` in the plan's row order, on the host."""
    order = torch.cat([index for index, _ in parts]).cpu()
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order))

    def joined(name: str, row_axis: int) -> torch.Tensor:
        return torch.cat([found[name].cpu() for _, found in parts], dim=row_axis).index_select(row_axis, inverse)

    pooled = joined("pooled", 0) if ask.key_cell is not None else None
    return RowMoments(
        rows=ask.text_rows.cpu(),
        visible=joined("visible", 0),
        pooled=pooled,
        **{name: joined(name, 1) for name in MOMENT_FIELDS},
    )
