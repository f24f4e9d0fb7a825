"""Small HTML pieces the applications' pages share: coloured cells and inline SVG bars."""

from __future__ import annotations

import numpy as np


def cell_colors(value: float, lo: float, hi: float, cmap: str) -> tuple[str, str]:
    """Background colour for ``value`` on ``cmap`` over [lo, hi], and a readable text colour on it."""
    import matplotlib

    share = 0.5 if not np.isfinite(value) or hi <= lo else float(np.clip((value - lo) / (hi - lo), 0.0, 1.0))
    r, g, b, _ = matplotlib.colormaps[cmap](share)
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return f"rgb({r * 255:.0f},{g * 255:.0f},{b * 255:.0f})", ("#000" if luminance > 0.5 else "#fff")


def svg_bar(value: float, limit: float, color: str, width: int = 180) -> str:
    """An inline SVG bar for a signed value on [-limit, limit] (a zero line in the middle when signed)."""
    signed = limit < 0
    limit = abs(limit) or 1.0
    zero = width / 2 if signed else 0.0
    scale = (width / 2 if signed else width) / limit
    length = float(np.clip(value * scale, -zero, width - zero)) if np.isfinite(value) else 0.0
    x = zero + min(0.0, length)
    return (
        f"<svg width='{width}' height='12' role='img' aria-label='{value:.4g}'>"
        f"<rect x='{x:.1f}' y='1' width='{abs(length):.1f}' height='10' fill='{color}'/>"
        f"<line x1='{zero:.1f}' x2='{zero:.1f}' y1='0' y2='12' stroke='#888' stroke-width='1'/></svg>"
    )


def bar_limit(values: np.ndarray) -> float:
    """Bar scale: the largest magnitude, negative when the values change sign (a centred axis)."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return 1.0
    top = float(np.abs(finite).max()) or 1.0
    return -top if finite.min() < 0 else top
