"""A float64 reference for the fused kernels' contract (``[head, query, 10]`` row sums, the output and
each row's weights), written directly from the definitions in headmap.capture.triton_kernel."""

from __future__ import annotations

import torch

LOWEST = torch.finfo(torch.float32).min


def _excluded(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.full(shape, -float("inf"), dtype=torch.float64)


def reference(q, k, v, scale, causal, window, track, special, key_lo, key_hi, mask, softcap, width=0):
    """``(out [b, n, h, dv], sums [b, h, n, 10], maps [b, h, n, width] or None)`` in float64 for the
    kernel's arguments (``special`` -1 padded)."""
    b_, h_, n, _ = q.shape
    n_k = k.shape[2]
    rep = h_ // k.shape[1]
    keys, values = k.double().repeat_interleave(rep, 1), v.double().repeat_interleave(rep, 1)
    s = torch.einsum("bhnd,bhkd->bhnk", q.double(), keys) * scale
    if softcap:
        s = softcap * torch.tanh(s / softcap)
    rows, cols = torch.arange(n)[:, None], torch.arange(n_k)[None, :]
    lo, hi = key_lo[:, :, None], key_hi[:, :, None]
    if window:
        lo = torch.maximum(lo, rows[None] - window + 1)
    if causal:
        hi = torch.minimum(hi, rows[None] + 1)
    inside = ((cols[None] >= lo) & (cols[None] < hi))[:, None].expand(b_, h_, n, n_k)
    visible = inside.clone()
    if mask is not None:
        m = mask.expand(b_, h_, n, n_k)
        if m.dtype == torch.bool:
            s = torch.where(m, s, torch.tensor(float(LOWEST), dtype=torch.float64))
            visible &= m
        else:
            s = (s + m.double()).clamp(min=float(LOWEST))
            visible &= m > torch.finfo(mask.dtype).min / 2
    s = torch.where(inside, s, _excluded(s.shape))
    top = s.amax(-1, keepdim=True)
    top = torch.where(top.isinf(), torch.zeros_like(top), top)
    e = torch.exp(s - top)
    z = e.sum(-1)
    safe_z = torch.where(z > 0, z, torch.ones_like(z))
    out = torch.einsum("bhnk,bhkd->bhnd", e, values) / safe_z[..., None]
    sums = torch.zeros(b_, h_, n, 10, dtype=torch.float64)
    sums[..., 0] = torch.where(z > 0, top[..., 0], torch.full_like(z, float(LOWEST)))
    sums[..., 1] = z
    sums[..., 2] = (e * torch.where(inside, s, torch.zeros_like(s))).sum(-1)
    sums[..., 3] = (e * (rows - cols).abs().double()).sum(-1)
    sums[..., 5] = visible.sum(-1).double()
    for b in range(b_):
        sums[b, :, :, 4] = e[b][..., special[b][special[b] >= 0]].sum(-1)
        for j in range(4):
            at = track[b, :, j]
            picked = e[b][:, torch.arange(n), at.clamp(min=0)]
            sums[b, :, :, 6 + j] = torch.where(at[None] >= 0, picked, torch.zeros_like(picked))
    maps = None
    if width:
        weights = e / safe_z[..., None]
        maps = torch.zeros(b_, h_, n, width, dtype=torch.float64)
        for b in range(b_):
            for r in range(n):
                first = int(key_lo[b, r])
                span = min(width, n_k - first)
                maps[b, :, r, :span] = weights[b, :, r, first : first + span]
    return out.transpose(1, 2), sums, maps
