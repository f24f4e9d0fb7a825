"""The fused statistics kernel in Triton: flash attention's forward, plus the statistics' row sums.

One program takes ``BLOCK_M`` query rows of one head of one batch element and walks the keys those
rows may see in tiles of ``BLOCK_N`` (online softmax, as flash attention does): it returns the
layer's output, which the model receives, and per row the sums the statistics need, the same
``[head, query, 10]`` layout as the compiled CPU kernel (``kernels/fused_stats.cpp``):

    0 m: the row max score     1 Z = sum e         2 sum e*s         3 sum e*|row - key|
    4 sum e over special keys  5 visible keys      6-9 e at the row's first key, itself, the key
                                                       before and the key after (0 where none)

with ``e = exp(s - m)`` for the final ``m``. The score ``s`` is what the model's softmax sees:
``scale * q.k``, then the softcap, then the mask (a boolean one, or an additive one clamped at
float32's lowest). Each row's keys are cut by its own range (``key_lo``/``key_hi``: its text in a
padded or packed batch) and by the causal and sliding-window flags; keys outside never count.

The main pass (:func:`_fused_stats`) is flash attention's loop plus two running sums; the special
and tracked keys are scored afterwards by a small second kernel (:func:`_row_keys`), one dot product
per row and key, instead of a compare-and-sum over every tile, which would keep the queries and more
registers alive through the loop. The products ``q.k`` are exact in float32 for bfloat16 and
float16 inputs, so only the summation order differs from the tile's (a few float32 ulps).

Queries, keys and values stay in the model's dtype: bfloat16 and float16 tiles take the tensor
cores with float32 accumulation, and the weights are rounded to the value dtype before ``P V``, as
flash attention does; float32 takes IEEE products (``input_precision="ieee"``: never TF32). Every
sum is float32. This module imports triton, an optional dependency: load it through
:mod:`headmap.capture.triton_stats`. Without a GPU, Triton's interpreter (``TRITON_INTERPRET=1``)
runs it on CPU tensors, which is how CI tests it.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

#: Sums per row (see the module docstring).
WIDTH = 10
_LOWEST = torch.finfo(torch.float32).min


@triton.jit
def _softcapped(s, cap):
    # cap * tanh(s / cap), with tanh from exp (libdevice's is not in the interpreter): absolute error
    # about 6e-8 * cap, far below a score's own rounding.
    x = s / cap
    t = tl.exp(-2.0 * tl.abs(x))
    th = (1.0 - t) / (1.0 + t)
    return tl.where(x < 0, -th, th) * cap


# float32's lowest, the clamp of an additive mask (a constexpr: compiled kernels read no other globals)
_LOW = tl.constexpr(-3.4028234663852886e38)


@triton.jit
def _row_ranges(KEY_LO, KEY_HI, b, rows, row_ok, N, NK, window, CAUSAL: tl.constexpr, WINDOWED: tl.constexpr):
    """Each row's visible keys ``[lo, hi)`` and the keys any row of the block sees, ``[start, end)``."""
    lo = tl.load(KEY_LO + b * N + rows, mask=row_ok, other=0)
    hi = tl.load(KEY_HI + b * N + rows, mask=row_ok, other=0)
    if WINDOWED:
        lo = tl.maximum(lo, rows - window + 1)
    if CAUSAL:
        hi = tl.minimum(hi, rows + 1)
    hi = tl.where(row_ok, hi, 0)
    lo = tl.where(row_ok, lo, NK)
    return lo, hi, tl.min(lo, 0), tl.max(hi, 0)


@triton.jit
def _scores(q, kt, scale, cap, SOFTCAP: tl.constexpr, IEEE: tl.constexpr):
    """``[BLOCK_M, BLOCK_N]``: scale * q.k for a key tile ``kt`` ``[d, BLOCK_N]``, then the softcap."""
    if IEEE:
        s = tl.dot(q.to(tl.float32), kt.to(tl.float32), input_precision="ieee") * scale
    else:
        s = tl.dot(q, kt) * scale
    if SOFTCAP:
        s = _softcapped(s, cap)
    return s


@triton.jit
def _masked(s, mask_ptrs, ok, MASK_KIND: tl.constexpr, threshold):
    """Scores after the model's mask tensor (MASK_KIND 1: additive, 2: boolean as bytes) and whether
    it leaves each key among ``ok`` visible. ``mask_ptrs``: the mask entries of ``s``."""
    if MASK_KIND == 1:
        mv = tl.load(mask_ptrs, mask=ok, other=0.0).to(tl.float32)
        return tl.maximum(s + mv, _LOW), ok & (mv > threshold)
    mv = tl.load(mask_ptrs, mask=ok, other=0)
    return tl.where(mv != 0, s, _LOW), ok & (mv != 0)


@triton.jit
def _fused_stats(
    Q, K, V, OUT, SUMS, KEY_LO, KEY_HI, MASK,
    sqb, sqh, sqn, sqd, skb, skh, skn, skd, svb, svh, svn, svd, msb, msh, msq, msk,
    H, N, NK, scale, cap, window, threshold,
    D: tl.constexpr, DV: tl.constexpr, REP: tl.constexpr, CAUSAL: tl.constexpr,
    WINDOWED: tl.constexpr, SOFTCAP: tl.constexpr, MASK_KIND: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):  # fmt: skip
    """One block of rows of one head of one batch element: the output and sums 0-3 and 5."""
    pid_m = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    g = h // REP
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < N
    dims = tl.arange(0, BLOCK_D)
    vdims = tl.arange(0, BLOCK_DV)
    lo, hi, start, end = _row_ranges(KEY_LO, KEY_HI, b, rows, row_ok, N, NK, window, CAUSAL, WINDOWED)
    wide = rows.to(tl.int64)
    q = tl.load(Q + b * sqb + h * sqh + wide[:, None] * sqn + dims[None, :] * sqd,
                mask=row_ok[:, None] & (dims[None, :] < D), other=0.0)  # fmt: skip
    # Tile pointers made once and moved along the keys (64-bit offsets only in the bases).
    span = start + tl.arange(0, BLOCK_N)
    k_ptrs = K + b * skb + g * skh + span[None, :] * skn + dims[:, None] * skd
    v_ptrs = V + b * svb + g * svh + span[:, None] * svn + vdims[None, :] * svd
    mask_rows = MASK + b * msb + h * msh + wide * msq  # [BLOCK_M] (tiles of pointers are not carried)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    w_i = tl.zeros([BLOCK_M], tl.float32)
    d_i = tl.zeros([BLOCK_M], tl.float32)
    seen = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    for n0 in range(start, end, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        col_ok = cols < NK
        kt = tl.load(k_ptrs, mask=col_ok[None, :] & (dims[:, None] < D), other=0.0)
        s = _scores(q, kt, scale, cap, SOFTCAP, IEEE)
        inside = (cols[None, :] >= lo[:, None]) & (cols[None, :] < hi[:, None])
        if MASK_KIND != 0:
            s, visible = _masked(s, mask_rows[:, None] + cols[None, :] * msk, inside, MASK_KIND, threshold)
            seen += tl.sum(visible.to(tl.float32), 1)
        s = tl.where(inside, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_i - m_safe)  # 0 while the row has seen no key
        p = tl.exp(s - m_safe[:, None])  # 0 outside the row's keys
        l_i = l_i * alpha + tl.sum(p, 1)
        w_i = w_i * alpha + tl.sum(p * tl.where(inside, s, 0.0), 1)
        d_i = d_i * alpha + tl.sum(p * tl.abs((rows[:, None] - cols[None, :]).to(tl.float32)), 1)
        v = tl.load(v_ptrs, mask=col_ok[:, None] & (vdims[None, :] < DV), other=0.0)
        if IEEE:  # (16-bit values in the interpreter: P rounded as the tensor cores take it)
            pv = tl.dot(p.to(v.dtype).to(tl.float32), v.to(tl.float32), input_precision="ieee")
        else:
            pv = tl.dot(p.to(v.dtype), v)
        acc = acc * alpha[:, None] + pv
        m_i = m_new
        k_ptrs += BLOCK_N * skn
        v_ptrs += BLOCK_N * svn

    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    out_ptrs = OUT + ((b * N + wide[:, None]) * H + h) * DV + vdims[None, :]
    tl.store(out_ptrs, out.to(OUT.dtype.element_ty), mask=row_ok[:, None] & (vdims[None, :] < DV))
    base = SUMS + ((b * H + h) * N + wide) * 10
    tl.store(base + 0, tl.where(m_i == float("-inf"), _LOW, m_i), mask=row_ok)
    tl.store(base + 1, l_i, mask=row_ok)
    tl.store(base + 2, w_i, mask=row_ok)
    tl.store(base + 3, d_i, mask=row_ok)
    if MASK_KIND == 0:
        seen = tl.maximum(hi - lo, 0).to(tl.float32)
    tl.store(base + 5, seen, mask=row_ok)


@triton.jit
def _key_weight(qf, k_base, key, ok, dims, skn, skd, mask_rows, msk, m, scale, cap,
                D: tl.constexpr, SOFTCAP: tl.constexpr, MASK_KIND: tl.constexpr):  # fmt: skip
    """``[BLOCK_M]``: ``exp(s - m)`` of each row against one key of its own (``key``; 0 where not
    ``ok``), the score made as a tile makes it."""
    kv = tl.load(
        k_base + key[:, None] * skn + dims[None, :] * skd, mask=ok[:, None] & (dims[None, :] < D), other=0.0
    )
    s = tl.sum(qf * kv.to(tl.float32), 1) * scale
    if SOFTCAP:
        s = _softcapped(s, cap)
    if MASK_KIND == 1:
        s = tl.maximum(s + tl.load(mask_rows + key * msk, mask=ok, other=0.0).to(tl.float32), _LOW)
    elif MASK_KIND == 2:
        s = tl.where(tl.load(mask_rows + key * msk, mask=ok, other=0) != 0, s, _LOW)
    return tl.exp(tl.where(ok, s - m, float("-inf")))


@triton.jit
def _row_keys(
    Q, K, SUMS, TRACK, SPECIAL, KEY_LO, KEY_HI, MASK,
    sqb, sqh, sqn, sqd, skb, skh, skn, skd, msb, msh, msq, msk,
    H, N, NK, S, scale, cap, window,
    D: tl.constexpr, REP: tl.constexpr, CAUSAL: tl.constexpr, WINDOWED: tl.constexpr,
    SOFTCAP: tl.constexpr, MASK_KIND: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Sums 4 and 6-9 of a block of rows, from the row max of :func:`_fused_stats`: the weight on the
    special keys the rows see (only the block's own few cost a dot product) and on the tracked keys."""
    pid_m = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < N
    dims = tl.arange(0, BLOCK_D)
    lo, hi, start, end = _row_ranges(KEY_LO, KEY_HI, b, rows, row_ok, N, NK, window, CAUSAL, WINDOWED)
    wide = rows.to(tl.int64)
    qf = tl.load(Q + b * sqb + h * sqh + wide[:, None] * sqn + dims[None, :] * sqd,
                 mask=row_ok[:, None] & (dims[None, :] < D), other=0.0).to(tl.float32)  # fmt: skip
    k_base = K + b * skb + (h // REP) * skh
    mask_rows = MASK + b * msb + h * msh + wide * msq
    base = SUMS + ((b * H + h) * N + wide) * 10
    m = tl.load(base, mask=row_ok, other=0.0)
    spec = tl.zeros([BLOCK_M], tl.float32)
    for j in range(0, S):
        key = tl.load(SPECIAL + b * S + j)
        if (key >= start) & (key < end):
            keys = tl.zeros([BLOCK_M], tl.int64) + key
            ok = row_ok & (keys >= lo) & (keys < hi)
            spec += _key_weight(
                qf, k_base, keys, ok, dims, skn, skd, mask_rows, msk, m, scale, cap, D, SOFTCAP, MASK_KIND
            )
    tl.store(base + 4, spec, mask=row_ok)
    for j in tl.static_range(4):
        key = tl.load(TRACK + (b * N + wide) * 4 + j, mask=row_ok, other=-1)
        ok = row_ok & (key >= 0) & (key >= lo) & (key < hi)
        safe = tl.where(ok, key, 0).to(tl.int64)
        found = _key_weight(
            qf, k_base, safe, ok, dims, skn, skd, mask_rows, msk, m, scale, cap, D, SOFTCAP, MASK_KIND
        )
        tl.store(base + 6 + j, found, mask=row_ok)


@triton.jit
def _row_maps(
    Q, K, SUMS, MAPS, KEY_LO, KEY_HI, MASK,
    sqb, sqh, sqn, sqd, skb, skh, skn, skd, msb, msh, msq, msk,
    H, N, NK, W, scale, cap, window, threshold,
    D: tl.constexpr, REP: tl.constexpr, CAUSAL: tl.constexpr, WINDOWED: tl.constexpr,
    SOFTCAP: tl.constexpr, MASK_KIND: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Each row's normalized weights over its first ``W`` keys (from its ``key_lo``), from the row
    max and normalizer of :func:`_fused_stats`: a second pass, so nothing is rescaled afterwards."""
    pid_m = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < N
    dims = tl.arange(0, BLOCK_D)
    first = tl.load(KEY_LO + b * N + rows, mask=row_ok, other=0)
    lo, hi, start, end = _row_ranges(KEY_LO, KEY_HI, b, rows, row_ok, N, NK, window, CAUSAL, WINDOWED)
    hi = tl.minimum(hi, first + W)
    wide = rows.to(tl.int64)
    q = tl.load(Q + b * sqb + h * sqh + wide[:, None] * sqn + dims[None, :] * sqd,
                mask=row_ok[:, None] & (dims[None, :] < D), other=0.0)  # fmt: skip
    span = start + tl.arange(0, BLOCK_N)
    k_ptrs = K + b * skb + (h // REP) * skh + span[None, :] * skn + dims[:, None] * skd
    mask_rows = MASK + b * msb + h * msh + wide * msq
    base = SUMS + ((b * H + h) * N + wide) * 10
    m = tl.load(base, mask=row_ok, other=0.0)
    z = tl.load(base + 1, mask=row_ok, other=1.0)
    inv = tl.where(z > 0, 1.0 / z, 0.0)
    for n0 in range(start, tl.max(hi, 0), BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        kt = tl.load(k_ptrs, mask=(cols < NK)[None, :] & (dims[:, None] < D), other=0.0)
        s = _scores(q, kt, scale, cap, SOFTCAP, IEEE)
        inside = (cols[None, :] >= lo[:, None]) & (cols[None, :] < hi[:, None])
        if MASK_KIND != 0:
            s, _ = _masked(s, mask_rows[:, None] + cols[None, :] * msk, inside, MASK_KIND, threshold)
        p = tl.exp(s - m[:, None]) * inv[:, None]
        tl.store(
            MAPS + ((b * H + h) * N + wide[:, None]) * W + (cols[None, :] - first[:, None]), p, mask=inside
        )
        k_ptrs += BLOCK_N * skn


def _blocks(dtype: torch.dtype, d: int, masked: bool, interpreted: bool) -> tuple[int, int, int]:
    """``(BLOCK_M, BLOCK_N, warps)`` for heads ``d`` wide: the largest tiles that compile for Hopper
    (sm_90, Triton 3.9) without spilling registers, by ptxas's count (``tests/triton_compile.py``):
    16-bit 128 x 64 (d <= 64: 199 registers), 128 x 32 (d <= 128: 183), 64 x 32 (238); float32,
    whose IEEE products take no tensor cores, 32 x 32 on 8 warps (d <= 64: 165), else 16 x 32 (148).
    A mask tensor's tile takes registers too: 16-bit heads wider than 64 then take 64-row blocks.
    The interpreter walks small tiles, so that tests cross many tile boundaries."""
    if interpreted:
        return 16, 16, 1
    if dtype == torch.float32:
        return (32, 32, 8) if d <= 64 else (16, 32, 4)
    if d <= 64:
        return 128, 64, 8
    if d <= 128 and not masked:
        return 128, 32, 8
    return 64, 32, 8


def _mask_args(
    mask: torch.Tensor | None, fallback: torch.Tensor
) -> tuple[torch.Tensor, list[int], int, float]:
    """The mask as the kernel reads it: ``(tensor, strides [b, h, q, k], kind, visible threshold)``."""
    if mask is None:
        return fallback, [0, 0, 0, 0], 0, 0.0
    strides = [0 if mask.shape[i] == 1 else mask.stride(i) for i in range(4)]
    if mask.dtype == torch.bool:
        return mask.view(torch.uint8), strides, 2, 0.0
    # A key counts as visible unless the mask all but removes it (the dtype's lowest, halved).
    return mask, strides, 1, float(torch.finfo(mask.dtype).min) / 2


def fused_stats(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    causal: bool,
    window: int | None,
    track: torch.Tensor,
    special: torch.Tensor,
    key_lo: torch.Tensor,
    key_hi: torch.Tensor,
    mask: torch.Tensor | None,
    softcap: float | None,
    width: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(out [batch, query, head, dv], sums [batch, head, query, 10], maps)`` for ``q`` ``[batch,
    head, query, d]``, ``k`` ``[batch, kv_head, key, d]``, ``v`` ``[batch, kv_head, key, dv]`` (any
    strides, any of float32, bfloat16, float16). ``track`` ``[batch, query, 4]``, ``key_lo`` and
    ``key_hi`` ``[batch, query]``, ``special`` ``[batch, S]`` (sorted, -1 padded) as
    :class:`headmap.capture.native.ElementLayout` has them; ``mask`` ``[1 or batch, 1 or head, query,
    key]`` (additive or boolean) or None. ``width``: also each row's normalized weights over its first
    ``width`` keys from ``key_lo``, ``maps`` ``[batch, head, query, width]`` (float32)."""
    batch, heads, n, d = q.shape
    kv_heads, n_k, dv = k.shape[1], k.shape[2], v.shape[-1]
    device = q.device
    interpreted = device.type == "cpu"
    block_m, block_n, warps = _blocks(q.dtype, max(d, dv), mask is not None, interpreted)
    out = torch.empty(batch, n, heads, dv, dtype=q.dtype, device=device)
    sums = torch.empty(batch, heads, n, WIDTH, dtype=torch.float32, device=device)
    track, special, key_lo, key_hi = (
        t.to(device=device, dtype=torch.int32).contiguous() for t in (track, special, key_lo, key_hi)
    )
    mask_t, ms, mask_kind, threshold = _mask_args(mask, sums)
    # IEEE float32 products for float32 inputs (never TF32); the interpreter's dot also takes 16-bit
    # inputs only as float32 (its bfloat16 product is wrong), which is exact for the products.
    ieee = q.dtype == torch.float32 or interpreted
    shape = dict(REP=heads // kv_heads, CAUSAL=bool(causal), WINDOWED=bool(window), SOFTCAP=bool(softcap),
                 MASK_KIND=mask_kind, D=d, BLOCK_M=block_m, BLOCK_D=max(16, triton.next_power_of_2(d)))  # fmt: skip
    grid = (triton.cdiv(n, block_m), heads, batch)
    qs, ks, vs = q.stride(), k.stride(), v.stride()
    cap, win = float(softcap or 1.0), int(window or 0)
    # Triton launches on the current CUDA device: a layer on another GPU (a device map) needs its own.
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        _fused_stats[grid](
            q, k, v, out, sums, key_lo, key_hi, mask_t, *qs, *ks, *vs, *ms,
            heads, n, n_k, float(scale), cap, win, threshold,
            DV=dv, IEEE=ieee, BLOCK_N=block_n, BLOCK_DV=max(16, triton.next_power_of_2(dv)),
            num_warps=warps, **shape,
        )  # fmt: skip
        _row_keys[grid](
            q, k, sums, track, special, key_lo, key_hi, mask_t, *qs, *ks, *ms,
            heads, n, n_k, special.shape[1], float(scale), cap, win, num_warps=warps, **shape,
        )  # fmt: skip
        if not width:
            return out, sums, None
        maps = torch.zeros(batch, heads, n, width, dtype=torch.float32, device=device)
        _row_maps[grid](
            q, k, sums, maps, key_lo, key_hi, mask_t, *qs, *ks, *ms,
            heads, n, n_k, width, float(scale), cap, win, threshold,
            IEEE=ieee, BLOCK_N=block_n, num_warps=warps, **shape,
        )  # fmt: skip
    return out, sums, maps
