"""The pruning report as one self-contained HTML page: the curve as an inline PNG, tables, no script.

Every text that comes from the user or the model (the model name, corpus names) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
from typing import TYPE_CHECKING

from headmap.apps.prune.pruning import pruning_record
from headmap.render.report import save_figure

if TYPE_CHECKING:
    from headmap.apps.prune.report import PruneReport

_STYLE = """
.hm-prune { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; max-width: 1200px; }
.hm-prune h1 { font-size: 20px; margin: 4px 0 8px; } .hm-prune h2 { font-size: 16px; margin: 22px 0 6px; }
.hm-prune p { margin: 4px 0; line-height: 1.45; } .hm-prune img { max-width: 100%; }
.hm-prune table { border-collapse: collapse; font-size: 12px; }
.hm-prune th, .hm-prune td { padding: 2px 8px; text-align: right; font-variant-numeric: tabular-nums; }
.hm-prune th:first-child, .hm-prune td:first-child { text-align: left; } .hm-prune .small { color: #555; font-size: 12px; }
"""


def _figure_png(report: PruneReport) -> str:
    buffer = io.BytesIO()
    save_figure(report.figure(), buffer, "png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape("" if value is None else str(value))


def _table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _pruning(report: PruneReport) -> str:
    p = report.pruning
    if p is None:
        return ""
    record = pruning_record(p)
    rows = [
        {"layer": layer, "heads removed": ", ".join(str(h) for h in heads)}
        for layer, heads in record["removed"].items()
    ]
    facts = [
        ("heads", f"{report.total_heads} -> {p.heads_after}"),
        ("key/value heads", f"{p.kv_heads_before} -> {p.kv_heads_after}"),
        ("parameters", f"{p.parameters_before:,} -> {p.parameters_after:,}"),
        ("max |cut - gated| output", f"{p.max_difference:.3g} (outputs up to {p.output_scale:.3g})"),
        ("saved to", p.folder or "not saved"),
    ]
    if p.latency is not None:
        facts.append(
            (
                "latency (median)",
                f"{p.latency.median_before * 1e3:.1f} ms -> {p.latency.median_after * 1e3:.1f} ms",
            )
        )
    fact_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in facts)
    return (
        f"<h2>The cut model ({html.escape(p.order)} order, {p.amount:.0%})</h2><table>{fact_rows}</table>"
        f"<p class='small'>Removed heads, in the unpruned model's numbering:</p>{_table(rows, ['layer', 'heads removed'])}"
    )


def report_body(report: PruneReport) -> str:
    table = report.table
    rows = table.astype(object).where(table.notna(), None).to_dict("records")
    summary = "".join(f"<p>{html.escape(line)}</p>" for line in report.summary)
    caveats = "".join(f"<p class='small'>{html.escape(line)}</p>" for line in report.caveats)
    notes = "".join(f"<p class='small'>{html.escape(line)}</p>" for line in report.notes)
    return (
        f"<div class='hm-prune'><style>{_STYLE}</style>"
        f"<h1>{html.escape(report.model)} · head pruning</h1>{summary}{notes}"
        f"<img alt='quality vs share of heads removed' src='data:image/png;base64,{_figure_png(report)}'>"
        f"{_pruning(report)}<h2>Every step</h2>{_table(rows, list(table.columns))}{caveats}</div>"
    )


__all__ = ["report_body"]
