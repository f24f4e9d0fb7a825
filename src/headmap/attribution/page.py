"""The self-contained HTML page of an explanation: plain HTML and CSS, no script runs, nothing is
fetched. The text is coloured once per method on the same units, then the agreement tables, the
IG check and the caveats; the full JSON rides along in a non-executed ``<script type=
"application/json">`` block so the page alone is enough to recompute every check.

Tokens, the model name, the target and the compare text are untrusted: every one is HTML-escaped,
and the embedded JSON has ``<``, ``>``, ``&``, U+2028 and U+2029 escaped so nothing can close the
block or start markup.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

from headmap.attribution.drawing import color_of, display_values, headline
from headmap.render.html import escape
from headmap.render.report import format_number

if TYPE_CHECKING:
    import pandas as pd

    from headmap.attribution.explanation import Explanation

_STYLE = """
.hm-ex { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; max-width: 1200px; }
.hm-ex table { border-collapse: collapse; margin: 6px 0 14px; font-size: 13px; }
.hm-ex th, .hm-ex td { padding: 3px 8px; text-align: left; vertical-align: top; }
.hm-ex table.grid th, .hm-ex table.grid td { border-bottom: 1px solid #e4e4e4; }
.hm-ex td.text { line-height: 2.0; }
.hm-ex span.u { padding: 2px 4px; margin: 0 1px; border-radius: 3px; white-space: pre; }
.hm-ex tr.causal td { font-weight: 600; background: #fff6e0; }
.hm-ex th.flag { color: #b00000; }
.hm-ex p.note, .hm-ex li { color: #555; font-size: 13px; line-height: 1.4; }
"""


def script_json(data: object) -> str:
    """JSON safe inside ``<script>``: ``<``, ``>``, ``&``, U+2028 and U+2029 as ``\\u`` escapes."""
    text = json.dumps(data, allow_nan=False)
    for raw, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text


def _row(ex: Explanation, method: str) -> str:
    shown = display_values(ex, method)
    raw = ex.scores[method]
    spans = []
    for unit, value, scaled in zip(ex.axis.tokens, raw, shown):
        background, text = color_of(scaled)
        title = escape(f"{unit}: {format_number(value)}")
        spans.append(
            f'<span class="u" style="background:{background};color:{text}" title="{title}">{escape(unit)}</span>'
        )
    flagged = ' class="flag"' if method in ex.flags else ""
    return f'<tr><th{flagged}>{escape(ex.label(method))}</th><td class="text">{" ".join(spans)}</td></tr>'


def _frame(frame: pd.DataFrame, highlight: str | None = None) -> str:
    head = "".join(f"<th>{escape(str(c))}</th>" for c in frame.columns if c != highlight)
    body = []
    for record in frame.to_dict("records"):
        mark = ' class="causal"' if highlight and record.get(highlight) else ""
        cells = "".join(
            f"<td>{escape(format_number(v, signed=isinstance(v, (float, np.floating))))}</td>"
            for c, v in record.items()
            if c != highlight
        )
        body.append(f"<tr{mark}>{cells}</tr>")
    return f'<table class="grid"><tr>{head}</tr>{"".join(body)}</table>'


def _ig_check(ex: Explanation) -> str:
    ig = ex.info.get("ig")
    if not ig:
        return ""
    total = float(np.nansum(ex.token_scores["ig"]))
    baseline = ex.baseline_output
    rows = [
        ("F(x)", f"{ex.output:.6g}"),
        ("F(baseline)", f"{baseline:.6g}" if baseline is not None else "n/a"),
        ("sum of IG scores", f"{total:.6g}"),
        ("convergence delta", f"{float(ig['delta']):+.3e}"),  # type: ignore[arg-type]  # the IG info record holds JSON values (object)
        ("steps", str(ig["steps"])),
        ("converged (|delta| <= 5% of |F(x) - F(baseline)|)", "yes" if ig["converged"] else "NO"),
        ("baseline", str(ig["baseline"])),
    ]
    cells = "".join(f"<tr><th>{escape(a)}</th><td>{escape(b)}</td></tr>" for a, b in rows)
    return f"<h3>Integrated Gradients check</h3><table>{cells}</table>"


def fragment(ex: Explanation) -> str:
    """The explanation as a self-contained HTML fragment (the notebook display, and the body of the
    ``.html`` file): the coloured rows, the agreement tables, the IG check, the caveats, and the full
    JSON in a non-executed block so the page alone is enough to recompute every check."""
    title = "".join(f"<p><strong>{escape(line)}</strong></p>" for line in headline(ex))
    rows = "".join(_row(ex, m) for m in ex.methods)
    legend = (
        f"<p class='note'>One row per method over the same {escape(ex.unit)}s. Colour: score divided by the "
        "method's largest |score| (red raises the output, blue lowers it); grey: special tokens, tokens the "
        "output cannot see, or not measured. Hover a word for its score.</p>"
    )
    label = ex.label
    agreement = ex.agreement().assign(
        method_a=lambda f: f["method_a"].map(label), method_b=lambda f: f["method_b"].map(label)
    )
    causal = ex.causal_agreement()
    causal = causal.assign(method=causal["method"].map(label))
    causal_html = (
        _frame(causal)
        if not causal.empty
        else "<p class='note'>Occlusion did not run: there is no causal reference.</p>"
    )
    caveats = "".join(f"<li>{escape(line)}</li>" for line in ex.caveats())
    return (
        f'<div class="hm-ex"><style>{_STYLE}</style>{title}<table>{rows}</table>{legend}'
        f"<h3>How causal is this picture: rank agreement with occlusion</h3>{causal_html}"
        f"<h3>Agreement between every pair of methods</h3>{_frame(agreement, 'with_occlusion')}"
        f"<p class='note'>Spearman and Kendall (tau-b) over {escape(ex.unit)}s, signed scores; *_abs compare "
        "magnitudes. Highlighted: pairs with occlusion.</p>"
        f"{_ig_check(ex)}<h3>Caveats</h3><ul>{caveats}</ul></div>\n"
        f'<script type="application/json" id="headmap-explanation">{script_json(ex.to_dict())}</script>'
    )
