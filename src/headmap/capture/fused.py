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
:func:`route` picks the kernel: Triton on a GPU (:mod:`headmap.capture.triton_stats`, also bfloat16
and float16), the compiled one on a CPU (:mod:`headmap.capture.native`), this one where neither serves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from headmap.capture import native, triton_stats
from headmap.capture.fused_rows import FusedRows
from headmap.capture.moments import MOMENT_FIELDS, PositionMoments, RowMoments, pool_keys
from headmap.capture.plan import COMPILED, EXACT, TORCH, TRITON
from headmap.capture.recompute import broadcast_pick, implicit_visible_counts, mask_implicit_, rows_per_block
from headmap.capture.tap import AttentionCall

_LOWEST = torch.finfo(torch.float32).min


def fusable(call: AttentionCall) -> str | None:
    """None if a fused kernel can reproduce this call's output, else why not (which kernel, and in
    what dtypes, is :func:`route`'s choice)."""
    if call.weights is not None or call.value is None or call.query is None or call.key is None:
        return "the model computes its weights itself"
    if call.module.training:
        return "the model is in training mode (attention dropout)"
    if call.query.shape[1] % call.key.shape[1]:
        return "query heads are not a multiple of key heads"
    return None


#: On a CPU the pure-torch fused kernel is slower than letting the model's kernel run and then
#: recomputing, except on long texts (SmolLM2, 2 threads, all heads, whole statistics runs: 1.48 s
#: against 1.17 s at 512 tokens, 6.39 s against 6.00 s at 2,048, 16.5 s against 17.4 s at 4,096),
#: so below this length it serves only where the compiled kernel cannot and the device is not a CPU.
TORCH_MIN_TOKENS = 4096
_POOLED = "an overview map is asked, which only the torch kernel makes"


def route(call: AttentionCall, pooled: bool) -> tuple[str, str]:
    """Which kernel serves this call's statistics, and why: ``(TRITON | COMPILED | TORCH | EXACT, reason)``.

    On a GPU the Triton kernel (any of float32, bfloat16, float16); on a CPU the compiled kernel
    (float32). The torch kernel takes float32 calls they cannot serve: on a GPU, and on a CPU for
    long texts (shorter ones pay less for the model's kernel and a recomputation). EXACT (the
    model's kernel, then recomputation) where the call cannot be fused (:func:`fusable`) or nothing
    else serves. ``pooled``: whether a pooled overview is asked of this call, which only the torch
    kernel makes. The reason is the one the notes give (empty where the preferred kernel serves).
    """
    unfit = fusable(call)
    if unfit is not None:
        return EXACT, unfit
    q = call.query
    assert q is not None
    gpu_refusal = triton_stats.refusal(call)
    if q.device.type != "cpu" or triton_stats.forced():  # a GPU, or Triton asked for on CPU tensors
        why = gpu_refusal or (_POOLED if pooled else None)
        if why is None:
            return TRITON, ""
        if q.dtype != torch.float32:
            return EXACT, f"{why}; the torch kernel reproduces float32 layers only"
        return TORCH, why
    if any(t.dtype != torch.float32 for t in (q, call.key, call.value)):  # type: ignore[union-attr]
        return EXACT, f"the model runs in {q.dtype}, and on a CPU only float32 layers are fused"
    refusal = native.refusal(call) or (_POOLED if pooled else None)
    if refusal is None:
        return COMPILED, ""
    if q.shape[2] >= TORCH_MIN_TOKENS:
        return TORCH, refusal
    return (
        EXACT,
        f"{refusal}; and on a CPU the torch kernel is slower than recomputing below {TORCH_MIN_TOKENS:,} tokens",
    )


def fused_attention(
    call: AttentionCall, asks: Sequence[FusedRows | None], block_bytes: int, kernel: str | None = None
) -> tuple[torch.Tensor, list[RowMoments | None]]:
    """The layer's attention output ``[batch, query, head, dim]`` and, per batch element, the
    moments of its asked rows (None where nothing is asked). ``kernel`` picks :data:`TRITON`,
    :data:`COMPILED` or :data:`TORCH` (default: the compiled one where it can serve, else torch)."""
    q, k, v = call.query, call.key, call.value
    assert q is not None and k is not None and v is not None
    batch, heads, n_q, dim = q.shape
    out = torch.empty(batch, n_q, heads, v.shape[-1], dtype=q.dtype, device=q.device)
    moments: list[RowMoments | None] = []
    if kernel is None:
        pooled = any(a is not None and a.key_cell is not None for a in asks)
        kernel = COMPILED if native.refusal(call) is None and not pooled else TORCH
    compiled = native.module() if kernel == COMPILED else None
    run = native.runner(compiled) if compiled is not None else None
    if kernel == TRITON:
        run = triton_stats.run_element
    for b in range(batch):
        ask = asks[b] if b < len(asks) else None
        if run is not None:
            out[b], found = native.native_element(call, b, ask, run)
        else:
            out[b], found = _element(call, b, ask, block_bytes)
        moments.append(found)
    return out, moments


def _element(
    call: AttentionCall, b: int, ask: FusedRows | None, block_bytes: int
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
    # Z = sum e and sum e * (key position) ride along with the values in the one product E [V | 1 | pos].
    augmented = torch.cat(
        [
            v[b].float(),
            torch.ones(kv_heads, n_k, 1, device=device),
            text_pos.expand(kv_heads, n_k)[..., None],
        ],
        dim=-1,
    )  # [kv, key, v_dim + 2]
    grouped = (q[b].float() * call.scaling).view(kv_heads, rep, n_q, dim)
    keys_t = k[b].float().transpose(1, 2)  # [kv, dim, key]
    out = torch.empty(n_q, heads, v_dim, dtype=q.dtype, device=device)
    step = rows_per_block(heads, n_k, block_bytes)
    wanted = _asked_positions(ask, n_q, device)
    found: list[tuple[torch.Tensor, RowMoments]] = []
    # Two buffers reused by every block: fresh block-sized tensors would cost page faults each time.
    scores_buf = torch.empty(heads * min(step, n_q) * n_k, device=device)
    weights_buf = torch.empty_like(scores_buf)
    for r0 in range(0, n_q, step):
        r1 = min(n_q, r0 + step)
        lo, hi = _key_range(call, r0, r1, n_k)
        rows = torch.arange(r0, r1, device=device)
        keys = torch.arange(lo, hi, device=device)
        size, n = heads * (r1 - r0) * (hi - lo), r1 - r0
        query = grouped[:, :, r0:r1].reshape(kv_heads, rep * n, dim)
        scores = torch.matmul(
            query, keys_t[:, :, lo:hi], out=scores_buf[:size].view(kv_heads, rep * n, hi - lo)
        )
        scores = _finish_scores(call, b, scores.view(heads, n, hi - lo), rows, keys)
        top = scores.amax(-1, keepdim=True)  # [head, row, 1]
        # Unnormalized weights: the row max has weight exactly 1.
        weights = torch.sub(scores, top, out=weights_buf[:size].view_as(scores)).exp_()
        # Positions relative to the block's first row, so that sum e * pos sums small numbers: the
        # distance row - E[pos] would otherwise cancel two numbers as large as the text is long.
        origin = float(text_pos[r0])
        augmented[:, lo:hi, -1] = text_pos[lo:hi] - origin
        summed = torch.matmul(weights.view(kv_heads, rep * n, hi - lo), augmented[:, lo:hi]).view(
            heads, n, -1
        )
        total = summed[..., -2]  # [head, row]
        out[r0:r1] = (summed[..., :v_dim] / total[..., None]).transpose(0, 1).to(out.dtype)
        if ask is None:
            continue
        picked = torch.nonzero(wanted[r0:r1] >= 0).flatten()
        if not len(picked):
            continue
        # sum_k e_k s_k for the entropy: one pass (measured faster than vecdot, and than the keys as
        # extra value columns, which double the second product).
        weighted = (weights * scores).sum(-1)  # [head, row]
        block = _BlockSums(
            weights, top[..., 0], total, weighted, summed[..., -1], origin, rows, keys, text_pos[lo:hi]
        )
        found.append((wanted[r0:r1][picked], _row_moments(call, b, ask, block, picked)))
    return out, (_assemble(ask, found) if ask is not None else None)


@dataclass(frozen=True)
class _BlockSums:
    """One block's unnormalized weights ``[head, row, key]`` and its per-row sums ``[head, row]``:
    the max score, Z = sum e, sum e*s and sum e*(key position); ``key_text`` is each key's text position."""

    weights: torch.Tensor
    top: torch.Tensor
    total: torch.Tensor
    weighted: torch.Tensor
    expected_pos: torch.Tensor  # sum e * (key position - origin)
    origin: float
    rows: torch.Tensor
    keys: torch.Tensor
    key_text: torch.Tensor


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


def _finish_scores(
    call: AttentionCall, b: int, scores: torch.Tensor, rows: torch.Tensor, keys: torch.Tensor
) -> torch.Tensor:
    """Softcap, position bias and mask, exactly as :func:`headmap.capture.recompute.attention_block`."""
    all_heads = torch.arange(scores.shape[0], device=scores.device)
    if call.softcap is not None:
        scores = torch.tanh(scores.div_(call.softcap)).mul_(call.softcap)
    if call.position_bias is not None:
        scores += broadcast_pick(call.position_bias, b, all_heads)[:, rows][:, :, keys].float()
    if call.mask is None:
        mask_implicit_(scores, call, rows, keys)
        return scores
    mask = broadcast_pick(call.mask, b, all_heads)[:, rows][:, :, keys]
    if mask.dtype != torch.bool:
        return scores.add_(mask.float().clamp(min=_LOWEST)).clamp_(min=_LOWEST)
    return scores.masked_fill_(~mask, _LOWEST)


def _visible(call: AttentionCall, b: int, rows: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    if call.mask is None:
        return implicit_visible_counts(call, rows, keys)
    heads = torch.arange(call.query.shape[1], device=rows.device)  # type: ignore[union-attr]  # has queries
    mask = broadcast_pick(call.mask, b, heads)[:, rows][:, :, keys]
    visible = mask if mask.dtype == torch.bool else mask > _LOWEST / 2
    return visible.sum(-1).amax(0)


def _row_moments(
    call: AttentionCall, b: int, ask: FusedRows, block: _BlockSums, picked: torch.Tensor
) -> RowMoments:
    """Moments of the rows ``picked`` (positions in the block) of one block; nothing block-sized is copied.

    ``rows`` of the record are the rows' positions in the batch (the text rows are set on assembly).
    """
    weights, keys = block.weights, block.keys
    rows = block.rows[picked]
    lo, width = (int(keys[0]) if len(keys) else 0), len(keys)
    total64 = block.total[:, picked].double()
    if ask.cross:
        positions = PositionMoments.undefined(total64.shape[0], total64.shape[1], device=total64.device)
    else:
        positions = _row_positions(call, ask, block, picked, total64)
    pooled = None
    if ask.key_cell is not None:
        pooled = _pooled(weights[:, picked], block.total[:, picked], ask, keys, block.key_text)
    return RowMoments.of(
        rows,
        _visible(call, b, rows, keys),
        log_z=block.top[:, picked].double() + total64.log(),
        mean_score=block.weighted[:, picked].double() / total64,
        p_max=1.0 / total64,
        p_first=_columns(weights, ask.keys[:1], lo, width)[:, picked].double() / total64,
        p_special=_columns(weights, ask.keys[ask.special], lo, width)[:, picked].double() / total64,
        positions=positions,
        pooled=pooled,
    )


def _row_positions(
    call: AttentionCall, ask: FusedRows, block: _BlockSums, picked: torch.Tensor, total64: torch.Tensor
) -> PositionMoments:
    """The position-based moments ``[head, row]`` of the rows ``picked`` of a self-attention block."""
    weights, keys = block.weights, block.keys
    rows = block.rows[picked]
    lo, width = (int(keys[0]) if len(keys) else 0), len(keys)
    text_rows = torch.searchsorted(ask.keys, rows)  # query and key are one text
    last = len(ask.keys) - 1

    def at(text_index: torch.Tensor, defined: torch.Tensor) -> torch.Tensor:
        values = _pick(weights, picked, ask.keys[text_index.clamp(0, last)] - lo, width).double() / total64
        return torch.where(defined[None, :], values, torch.full_like(values, float("nan")))

    if call.mask is None and call.is_causal:
        distance = (text_rows.double() - block.origin)[None, :] - block.expected_pos[
            :, picked
        ].double() / total64
    else:
        gap = (text_rows[:, None].float() - block.key_text[None, :]).abs_()  # [row, key]
        distance = torch.einsum("hrk,rk->hr", weights[:, picked], gap).double() / total64
    return PositionMoments(
        p_diag=at(text_rows, torch.ones_like(text_rows, dtype=torch.bool)),
        p_prev=at(text_rows - 1, text_rows >= 1),
        p_next=at(text_rows + 1, text_rows < last),
        distance=distance,
    )


def _columns(weights: torch.Tensor, positions: torch.Tensor, lo: int, width: int) -> torch.Tensor:
    """``[head, row]``: the sum of ``weights`` over the key ``positions`` inside the block's range."""
    local = positions - lo
    local = local[(local >= 0) & (local < width)]
    return weights[..., local].sum(-1)


def _pick(weights: torch.Tensor, picked: torch.Tensor, local: torch.Tensor, width: int) -> torch.Tensor:
    """``[head, row]``: ``weights[h, picked[i], local[i]]``, 0 where ``local[i]`` is outside the block."""
    inside = (local >= 0) & (local < width)
    values = torch.zeros(weights.shape[0], len(picked), dtype=weights.dtype, device=weights.device)
    values[:, inside] = weights[:, picked[inside], local[inside]]
    return values


def _pooled(
    weights: torch.Tensor, total: torch.Tensor, ask: FusedRows, keys: torch.Tensor, key_text: torch.Tensor
) -> torch.Tensor:
    """``[row, cell]``: head-mean weights over the text's keys, max-pooled over key cells."""
    mean = (weights[ask.heads] / total[ask.heads, :, None]).mean(0)  # [row, key]
    real = torch.isin(keys, ask.keys)
    text_index = key_text[real].long()
    dense = torch.zeros(mean.shape[0], len(ask.keys), dtype=mean.dtype, device=mean.device)
    dense[:, text_index] = mean[:, real]
    assert ask.key_cell is not None
    return pool_keys(dense.cpu(), ask.key_cell, ask.n_cells)


def _assemble(ask: FusedRows, parts: list[tuple[torch.Tensor, RowMoments]]) -> RowMoments:
    """Join the blocks' moments into one :class:`RowMoments` in the plan's row order, on the host."""
    order = torch.cat([index for index, _ in parts]).cpu()
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order))

    def joined(pieces: list[torch.Tensor], row_axis: int) -> torch.Tensor:
        return torch.cat([piece.cpu() for piece in pieces], dim=row_axis).index_select(row_axis, inverse)

    def field(name: str) -> torch.Tensor:  # a [head, row] field of every block, joined
        return joined([getattr(found, name) for _, found in parts], 1)

    pooled = None
    if ask.key_cell is not None:
        pooled = joined([found.pooled for _, found in parts if found.pooled is not None], 0)
    return RowMoments(
        rows=ask.text_rows.cpu(),
        visible=joined([found.visible for _, found in parts], 0),
        pooled=pooled,
        **{name: field(name) for name in MOMENT_FIELDS},
    )
