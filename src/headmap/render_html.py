"""Interactive, self-contained HTML heatmaps (plotly with its JavaScript embedded) and notebook display.

Tokens are untrusted text. They are HTML-escaped before they become plotly labels (plotly renders
tags such as ``<b>``, ``<br>`` and links in labels), and everything placed inside a ``<script>``
goes through plotly's JSON encoder, which escapes ``<``, ``>`` and ``/``. Nothing is fetched at
view time: no CDN, no fonts, no analytics.
"""

from __future__ import annotations

import base64
import html
import io
import math

import numpy as np

from headmap.downsample import downsample, downsample_note, pooled_labels
from headmap.result import CAUSATION_WARNING, AttentionResult, LayerKey

PLOTLY_SCALES = {"viridis": "Viridis", "magma": "Magma", "inferno": "Inferno", "plasma": "Plasma",
                 "cividis": "Cividis", "Blues": "Blues", "Greys": "Greys", "YlOrRd": "YlOrRd",
                 "RdBu_r": "RdBu_r", "RdBu": "RdBu", "coolwarm": "RdBu_r", "bwr": "RdBu_r"}


def _scale(cmap: str) -> str:
    from headmap.render_static import colormap

    colormap(cmap)  # same validation and message as the static path
    return PLOTLY_SCALES.get(cmap, "Viridis")


def _labels(labels: list[str]) -> list[str]:
    return [html.escape(label, quote=True) for label in labels]


def _axes_and_z(result: AttentionResult, key: LayerKey, weights: np.ndarray, max_tokens: int) -> tuple[np.ndarray, list[str], list[str], str]:
    layer = result.layer(key)
    pooled, fq, fk = downsample(weights, max_tokens)
    rows = _labels(pooled_labels(result.row_tokens(layer).labels(), fq))
    cols = _labels(pooled_labels(result.key_tokens(key).labels(), fk))
    return pooled.astype(np.float32), rows, cols, downsample_note(weights.shape[-2:], fq, fk)


def _caption(result: AttentionResult, note: str) -> str:
    return html.escape(" · ".join(p for p in (note, *result.notes, CAUSATION_WARNING) if p))


def _page(fig, caption: str) -> str:  # type: ignore[no-untyped-def]
    fig.add_annotation(text=caption, xref="paper", yref="paper", x=0, y=-0.02, yanchor="top", showarrow=False,
                       align="left", font={"size": 11, "color": "#555"})
    return fig.to_html(include_plotlyjs=True, full_html=True, config={"displaylogo": False})


def _hover(result: AttentionResult) -> str:
    label = "log10 weight" if "log10" in result.normalization else "weight"
    return "query: %{y}<br>key: %{x}<br>" + label + ": %{z:.4f}<extra></extra>"


def head_html(result: AttentionResult, key: LayerKey, head: int, cmap: str = "viridis", max_tokens: int = 512) -> str:
    """A full HTML document with one interactive heatmap; hover shows query, key and weight."""
    import plotly.graph_objects as go

    key = result.resolve(key)
    z, rows, cols, note = _axes_and_z(result, key, result.head(key, head), max_tokens)
    fig = go.Figure(go.Heatmap(z=z, x=cols, y=rows, colorscale=_scale(cmap), hovertemplate=_hover(result),
                               zmin=None if "log10" in result.normalization else 0.0))
    title = f"{result.model} · {key.title()} · head {head}<br>{result.normalization}"
    side = int(np.clip(14 * len(rows) + 250, 500, 1100))
    fig.update_layout(title=html.escape(title).replace("&lt;br&gt;", "<br>"), width=side + 120, height=side + 60,
                      xaxis={"type": "category", "title": "key (attended to)", "tickangle": -90},
                      yaxis={"type": "category", "autorange": "reversed", "title": "query (attending)"},
                      margin={"b": 140})
    return _page(fig, _caption(result, note))


def grid_html(result: AttentionResult, key: LayerKey, cmap: str = "viridis", max_tokens: int = 256) -> str:
    """All captured heads of a layer, one panel each, on a shared colour scale."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    key = result.resolve(key)
    layer = result.layer(key)
    z, rows, cols, note = _axes_and_z(result, key, layer.weights, max_tokens)
    n = len(layer.heads)
    ncols = math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=[f"head {h}" for h in layer.heads])
    zmax = float(z.max()) if z.size else 1.0
    zmin = None if "log10" in result.normalization else 0.0
    for i in range(n):
        fig.add_trace(go.Heatmap(z=z[i], x=cols, y=rows, coloraxis="coloraxis", hovertemplate=_hover(result)),
                      row=i // ncols + 1, col=i % ncols + 1)
    fig.update_xaxes(type="category", showticklabels=False)
    fig.update_yaxes(type="category", autorange="reversed", showticklabels=False)
    title = html.escape(f"{result.model} · {key.title()} · all heads · {result.normalization}")
    fig.update_layout(title=title, coloraxis={"colorscale": _scale(cmap), "cmin": zmin, "cmax": zmax},
                      width=260 * ncols + 150, height=260 * nrows + 160, margin={"b": 120})
    return _page(fig, _caption(result, note))


def notebook_html(result: AttentionResult) -> str:
    """Light rich display for notebooks: an inline PNG of the first captured head and a summary.

    Embedding plotly.js (~4 MB) in every cell output would bloat notebooks; the interactive view
    is one ``result.render("x.html", ...)`` away.
    """
    from headmap.render_static import plot_head

    rows = [("model", result.model), (f"{result.source.unit}s", str(len(result.source)))]
    if result.target is not None:
        rows.append((f"target {result.target.unit}s", str(len(result.target))))
    rows += [("layers", ", ".join(k.name for k in result.keys)), ("heads", str(result.num_heads)),
             ("normalization", result.normalization)]
    table = "".join(f"<tr><th style='text-align:left'>{html.escape(a)}</th><td>{html.escape(b)}</td></tr>" for a, b in rows)
    image = ""
    if result.layers:
        first = result.layers[0]
        fig = plot_head(result, first.key, first.heads[0], max_tokens=128)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
        image = f"<img alt='{html.escape(first.key.title())}, head {first.heads[0]}' src='data:image/png;base64,{data}'/>"
    return (f"<div><table>{table}</table>{image}"
            f"<p><em>{html.escape(CAUSATION_WARNING)}</em></p></div>")
