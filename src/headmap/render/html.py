"""Interactive, self-contained HTML heatmaps (plotly, its JavaScript embedded).

Tokens are untrusted text. They are HTML-escaped before they become plotly labels, because
plotly turns ``<b>``, ``<br>``, ``<a href>`` and similar tags in labels into markup; plotly.js
splits labels on tags first and turns the remaining entities back into plain text nodes, so an
escaped token shows exactly as typed. Everything inside a ``<script>`` is written by plotly's
JSON encoder, which escapes ``<``, ``>`` and ``/``, so no token can close the script; this module
embeds no JSON of its own. Nothing is fetched at view time: no CDN, no fonts, no MathJax.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np

from headmap.normalization import Normalization
from headmap.render.static import check_cmap
from headmap.result import CAUSATION_WARNING, AttentionResult, LayerKey
from headmap.view.downsample import color_limits, pooled_labels, prepare, visible

HEAD_MAX_TOKENS = 512
GRID_MAX_TOKENS = 256
_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 16px; color: #222; }}
p.caption {{ color: #555; font-size: 13px; max-width: 1100px; line-height: 1.4; }}
</style>
</head>
<body>
{plot}
<p class="caption">{caption}</p>
</body>
</html>
"""


def escape(text: str) -> str:
    """Untrusted text made inert for HTML and plotly labels (control characters made visible too).

    ``$`` becomes ``&#36;`` as well: plotly hands ``$...$`` labels to MathJax where a page has it.
    """
    return html.escape(visible(text), quote=True).replace("$", "&#36;")


def unique(labels: Sequence[str]) -> list[str]:
    """``labels`` with any repeats suffixed ``·i``: plotly merges equal categories into one row."""
    counts = Counter(labels)
    return [f"{label}·{i}" if counts[label] > 1 else label for i, label in enumerate(labels)]


def axis_categories(labels: Sequence[str], factor: int) -> list[str]:
    """Escaped, unique category names of one axis: token labels or pooled ranges ``a…b [i-j]``."""
    return unique(
        [escape(label) for label in pooled_labels(labels, factor, width=16 if factor > 1 else None)]
    )


def plotly_colorscale(cmap: str, steps: int = 17) -> list[list[object]]:
    """A matplotlib colormap sampled into a plotly colorscale, so both renderers share names."""
    colors = matplotlib.colormaps[check_cmap(cmap)](np.linspace(0.0, 1.0, steps))
    return [
        [i / (steps - 1), f"rgb({r * 255:.0f},{g * 255:.0f},{b * 255:.0f})"]
        for i, (r, g, b, _) in enumerate(colors)
    ]


def hover_template(normalization: Normalization, pooled: bool, head: int | None = None) -> str:
    """Hover text: query token, key token and weight (a block max when pooled)."""
    what = normalization.value_label.replace("attention ", "")
    what = f"max {what} in block" if pooled else what
    prefix = f"head {head}<br>" if head is not None else ""
    return prefix + "query: %{y}<br>key: %{x}<br>" + what + ": %{z:.4f}<extra></extra>"


def _title(result: AttentionResult, what: str) -> str:
    # Our own <br>/<sub> markup around escaped untrusted parts (model names can be user paths).
    return (
        f"{escape(result.model)}<br><sub>{what} · normalization: {escape(result.normalization.caption)}</sub>"
    )


def _page(fig: Any, title: str, notes: Sequence[str]) -> str:
    """A full HTML document: the figure with plotly.js inlined, and the escaped caption below it."""
    plot = fig.to_html(
        full_html=False,
        include_plotlyjs=True,
        include_mathjax=False,
        config={"displaylogo": False, "responsive": True},
    )
    caption = "<br>".join(escape(line) for line in [*notes, CAUSATION_WARNING] if line)
    return _PAGE.format(title=escape(title), plot=plot, caption=caption)


def _side(n: int, lo: int, hi: int) -> int:
    return int(np.clip(14 * n + 200, lo, hi))


def head_html(
    result: AttentionResult,
    key: LayerKey | int | str,
    head: int,
    cmap: str = "viridis",
    max_tokens: int = HEAD_MAX_TOKENS,
    vmin: float | None = None,
    vmax: float | None = None,
) -> str:
    """A full HTML document with one interactive heatmap ``[query, key]`` of one head.

    Hover shows the query token, the key token and the weight. Beyond ``max_tokens`` tokens a
    side the map is max-pooled (peaks preserved) and the caption says so.
    """
    import plotly.graph_objects as go

    key = result.resolve(key)
    prep = prepare(result, key, [head], max_tokens)
    (fq, fk), z = prep.factors, prep.values[0]
    rows, cols = axis_categories(prep.row_labels, fq), axis_categories(prep.key_labels, fk)
    zmin, zmax = color_limits(z, result.normalization, vmin, vmax)
    trace = go.Heatmap(
        z=z,
        x=cols,
        y=rows,
        zmin=zmin,
        zmax=zmax,
        colorscale=plotly_colorscale(cmap),
        hovertemplate=hover_template(result.normalization, fq * fk > 1),
        colorbar={"title": {"text": result.normalization.value_label}},
    )
    fig = go.Figure(trace)
    what = f"{key.title()} · head {prep.heads[0]}"
    fig.update_layout(
        title={"text": _title(result, what), "x": 0.01},
        width=_side(len(cols), 520, 1200) + 140,
        height=_side(len(rows), 420, 1100) + 120,
        margin={"t": 90},
        xaxis={"type": "category", "title": {"text": "key (attended to)"}, "tickangle": -90},
        yaxis={"type": "category", "autorange": "reversed", "title": {"text": "query (attending)"}},
    )
    return _page(fig, f"{result.model} · {what}", prep.notes)


def grid_html(
    result: AttentionResult,
    key: LayerKey | int | str,
    cmap: str = "viridis",
    max_tokens: int = GRID_MAX_TOKENS,
    vmin: float | None = None,
    vmax: float | None = None,
) -> str:
    """All captured heads of a layer, one interactive panel each, on one shared colour scale."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    key = result.resolve(key)
    prep = prepare(result, key, None, max_tokens)
    (fq, fk), n = prep.factors, len(prep.heads)
    rows, cols = axis_categories(prep.row_labels, fq), axis_categories(prep.key_labels, fk)
    ncols = math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    fig = make_subplots(
        rows=nrows,
        cols=ncols,
        subplot_titles=[f"head {h}" for h in prep.heads],
        horizontal_spacing=0.04,
        vertical_spacing=0.08 / max(1, nrows / 3),
    )
    for i, head in enumerate(prep.heads):
        fig.add_trace(
            go.Heatmap(
                z=prep.values[i],
                x=cols,
                y=rows,
                coloraxis="coloraxis",
                hovertemplate=hover_template(result.normalization, fq * fk > 1, head),
            ),
            row=i // ncols + 1,
            col=i % ncols + 1,
        )
    labelled = max(len(rows), len(cols)) <= 24
    fig.update_xaxes(type="category", showticklabels=labelled, tickangle=-90)
    fig.update_yaxes(type="category", autorange="reversed", showticklabels=labelled)
    zmin, zmax = color_limits(prep.values, result.normalization, vmin, vmax)
    what = f"{key.title()} · all {n} captured heads"
    panel = 300 if labelled else 240
    fig.update_layout(
        title={"text": _title(result, what), "x": 0.01},
        margin={"t": 110},
        coloraxis={
            "colorscale": plotly_colorscale(cmap),
            "cmin": zmin,
            "cmax": zmax,
            "colorbar": {"title": {"text": result.normalization.value_label}},
        },
        width=min(1800, panel * ncols + 160),
        height=panel * nrows + 140,
    )
    return _page(fig, f"{result.model} · {what}", prep.notes)


def summary_rows(result: AttentionResult) -> list[tuple[str, str]]:
    """``(field, value)`` pairs describing a result, unescaped."""
    rows = [("model", result.model), (f"{result.source.unit}s", str(len(result.source)))]
    if result.target is not None:
        rows.append((f"target {result.target.unit}s", str(len(result.target))))
    rows += [
        ("layers captured", ", ".join(k.name for k in result.keys) or "none"),
        ("heads", ", ".join(str(h) for h in result.layers[0].heads) if result.layers else "none"),
        ("heads per layer (model)", str(result.num_heads)),
        ("normalization", result.normalization.caption),
        *(("note", note) for note in result.notes),
    ]
    return rows
