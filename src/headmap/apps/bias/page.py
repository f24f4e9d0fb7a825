"""The bias report as one self-contained HTML page: plain HTML and CSS, no script, nothing fetched.

Every text that comes from the user or the model (template, evidence, names, labels, target,
prompts, tokens, the model name) is HTML-escaped here; the page has no ``<script>`` at all.
Colours come from matplotlib colormaps, computed at write time.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from headmap.apps.bias.findings import ALPHA, output_name
from headmap.apps.html_parts import bar_limit, cell_colors, svg_bar
from headmap.render.html import escape

if TYPE_CHECKING:
    from headmap.apps.bias.report import BiasReport
    from headmap.apps.bias.stats import PairedStats

_STYLE = """
.hm-bias { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; max-width: 1200px; }
.hm-bias h1 { font-size: 20px; margin: 4px 0 8px; } .hm-bias h2 { font-size: 16px; margin: 22px 0 6px; }
.hm-bias p { margin: 4px 0; line-height: 1.45; } .hm-bias .finding { background: #f4f4ef; padding: 6px 10px; }
.hm-bias table { border-collapse: collapse; font-size: 12px; }
.hm-bias th, .hm-bias td { padding: 2px 6px; text-align: left; vertical-align: middle; }
.hm-bias td.num { text-align: right; font-variant-numeric: tabular-nums; }
.hm-bias td.map { width: 22px; height: 16px; padding: 0; text-align: center; font-size: 10px; }
.hm-bias .name { background: #cfe3f5; } .hm-bias .evidence { background: #fbe0cc; }
.hm-bias pre { white-space: pre-wrap; font-size: 12px; } .hm-bias .small { color: #555; font-size: 12px; }
.hm-bias .tpl { font-size: 14px; padding: 6px 8px; border-left: 4px solid #ccc; white-space: pre-wrap; }
"""


def _p(value: float) -> str:
    return "n/a" if not math.isfinite(value) else (f"{value:.2g}" if value < 0.001 else f"{value:.3f}")


def _template(report: BiasReport) -> str:
    """The template with the name slots and the evidence phrase marked."""
    text, evidence = report.template, report.evidence
    start = text.index(evidence)
    parts = [(text[:start], False), (evidence, True), (text[start + len(evidence) :], False)]
    out = []
    for part, is_evidence in parts:
        if is_evidence:
            out.append(f"<span class='evidence'>{html.escape(part)}</span>")
            continue
        pieces = part.split("{name}")
        out.append("<span class='name'>{name}</span>".join(html.escape(p) for p in pieces))
    return "".join(out)


def _stats_table(report: BiasReport) -> str:
    a, b = report.labels
    rows: list[tuple[str, PairedStats]] = [
        (f"output: {a} - {b}", report.gap),
        (f"output with the top {report.k} name heads ablated", report.gap_ablated),
        ("change of the gap: top name heads", report.ablation),
    ]
    rows += [(f"change of the gap: random set {i + 1}", c) for i, c in enumerate(report.controls)]
    limit = bar_limit(
        np.array([s.mean for _, s in rows] + [s.ci_low for _, s in rows] + [s.ci_high for _, s in rows])
    )
    body = "".join(
        f"<tr><td>{escape(label)}</td><td class='num'>{s.n}</td><td class='num'>{s.mean:+.4f}</td>"
        f"<td>{svg_bar(s.mean, limit, '#d0612a' if 'change' in label else '#777')}</td>"
        f"<td class='num'>[{s.ci_low:+.4f}, {s.ci_high:+.4f}]</td><td class='num'>{_p(s.t_p)}</td>"
        f"<td class='num'>{_p(s.wilcoxon_p)}</td><td class='num'>{s.d_z:+.2f}</td></tr>"
        for label, s in rows
    )
    head = (
        f"<tr><th>quantity</th><th>pairs</th><th colspan='2'>mean difference</th><th>{report.confidence:.0%} "
        "bootstrap CI</th><th>t-test p</th><th>Wilcoxon p</th><th>d_z</th></tr>"
    )
    return f"<table>{head}{body}</table>"


def _head_map(
    report: BiasReport,
    values: np.ndarray,
    cmap: str,
    signed: bool,
    marks: np.ndarray,
    mark: str,
    fmt: str,
    sinks: np.ndarray | None = None,
) -> str:
    """A ``[layer, head]`` map as a coloured table, layers as rows; ``sinks`` cells get an "s"."""
    finite = values[np.isfinite(values)]
    top = float(np.abs(finite).max()) if finite.size else 1.0
    lo, hi = (-top, top) if signed else (0.0, top)
    head = "".join(f"<th>{h}</th>" for h in report.heads)
    rows = []
    for li, layer in enumerate(report.layers):
        cells = []
        for hi_, h in enumerate(report.heads):
            value = values[li, hi_]
            bg, fg = cell_colors(value, lo, hi, cmap)
            sink = sinks is not None and bool(sinks[li, hi_])
            shown = (mark if marks[li, hi_] else "") + ("s" if sink else "")
            cells.append(
                f"<td class='map' style='background:{bg};color:{fg}' title='{escape(layer)}, head {h}: "
                f"{format(value, fmt)}{' (first-token sink)' if sink else ''}'>{shown}</td>"
            )
        rows.append(f"<tr><th>{escape(layer)}</th>{''.join(cells)}</tr>")
    return f"<table><tr><th>layer \\ head</th>{head}</tr>{''.join(rows)}</table>"


def _top_heads(report: BiasReport, count: int = 12) -> str:
    table = report.table.sort_values("name_attention", ascending=False).head(count)
    a, b = report.labels
    rows = []
    for (layer, head), row in table.iterrows():
        rows.append(
            f"<tr><td>{escape(str(layer))}</td><td class='num'>{head}</td>"
            f"<td class='num'>{row['name_attention']:.4f}</td>"
            f"<td class='num'>{row[f'name_{a}']:.4f}</td><td class='num'>{row[f'name_{b}']:.4f}</td>"
            f"<td class='num'>{row[f'evidence_{a}']:.4f}</td><td class='num'>{row[f'evidence_{b}']:.4f}</td>"
            f"<td class='num'>{row['contrast_mean']:+.4f}</td><td class='num'>{_p(row['contrast_t_q'])}</td>"
            f"<td>{'first-token sink' if row['sink'] else ''}</td>"
            f"<td>{'ablated' if row['ablated'] else ''}</td></tr>"
        )
    head = (
        f"<tr><th>layer</th><th>head</th><th>name (both)</th><th>name {escape(a)}</th><th>name {escape(b)}</th>"
        f"<th>evidence {escape(a)}</th><th>evidence {escape(b)}</th><th>contrast {escape(a)} - {escape(b)}</th>"
        "<th>BH q (t)</th><th>sink</th><th></th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def _pairs(report: BiasReport) -> str:
    table = report.pair_table
    diff = table["difference"].to_numpy()
    limit = bar_limit(diff)
    rows = []
    for p, row in enumerate(table.itertuples(index=False)):
        rows.append(
            f"<tr><td>{html.escape(row[0])}</td><td>{html.escape(row[1])}</td><td class='num'>{row[2]:.4f}</td>"
            f"<td class='num'>{row[3]:.4f}</td><td class='num'>{diff[p]:+.4f}</td>"
            f"<td>{svg_bar(diff[p], limit, '#2b7bb9')}</td><td class='num'>{row[7]:+.4f}</td></tr>"
        )
    a, b = report.labels
    head = (
        f"<tr><th>{escape(a)}</th><th>{escape(b)}</th><th>output {escape(a)}</th><th>output {escape(b)}</th>"
        "<th colspan='2'>difference</th><th>difference, ablated</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def _prompt(report: BiasReport, i: int) -> str:
    """One prompt's tokens with the name's and the evidence's marked."""
    p = report.prompts[i]
    names, evidence = set(p.name_tokens), set(p.evidence_tokens)
    tokens = p.encoded.tokens
    spans, position = [], 0
    for t, (a, b) in enumerate(tokens.offsets):
        if b > a and a > position:  # text between tokens (BERT's offsets leave spaces out)
            spans.append(html.escape(tokens.text[position:a]))
        piece = tokens.text[a:b] if b > a else tokens.tokens[t]
        position = max(position, b)
        cls = " class='name'" if t in names else (" class='evidence'" if t in evidence else "")
        spans.append(f"<span{cls}>{html.escape(piece)}</span>")
    return (
        f"<details><summary>{escape(report.labels[p.group])}: {html.escape(p.name)} · output "
        f"{report.outputs[i]:.4f} · {len(p)} tokens</summary><pre>{''.join(spans)}</pre></details>"
    )


def _list(lines: Sequence[str], cls: str = "") -> str:
    attr = f" class='{cls}'" if cls else ""
    return "".join(f"<p{attr}>{escape(line)}</p>" for line in lines)


def report_body(report: BiasReport) -> str:
    """The report as an HTML fragment (its own scoped style), for notebooks and for the page."""
    a, b = report.labels
    stats = report.head_statistics
    ablated = np.zeros(report.name_score.shape, dtype=bool)
    index = {
        (layer, head): (li, hi)
        for li, layer in enumerate(report.layers)
        for hi, head in enumerate(report.heads)
    }
    for pair in report.ablated:
        ablated[index[pair]] = True
    groups = "".join(
        f"<p><strong>{escape(g.label)}</strong> ({len(g.names)} names): {html.escape(', '.join(g.names))}</p>"
        for g in report.groups
    )
    chat = " (the user message of the model's chat template)" if report.chat else ""
    source = (
        "mean over every row (the output pools every token)"
        if all(p is None for p in report.positions)
        else "from the answer position"
    )
    sinks = report.sink_heads
    sink_note = (
        f" s marks the {int(sinks.sum())} first-token sinks: their name attention is the weight on the "
        "prompt's first token, which the name occupies, not attention to the name."
        if sinks.any()
        else ""
    )
    sink_para = f"<p class='small'>{sink_note.strip()}</p>" if sinks.any() else ""
    return (
        f"<div class='hm-bias'><style>{_STYLE}</style>"
        f"<h1>Bias probe · {escape(report.model)}</h1>"
        f"<p class='tpl'>{_template(report)}</p>"
        f"<p class='small'>Template{chat}: <span class='name'>name slot</span>, "
        f"<span class='evidence'>evidence</span>. Output compared: {escape(output_name(report))}.</p>{groups}"
        f"<h2>Findings</h2>{_list(report.findings, 'finding')}{_list(report.warnings, 'finding')}"
        f"<h2>Output gap and causal check</h2>{_stats_table(report)}"
        f"<h2>Attention on the name per head</h2><p class='small'>Mean over pairs of both prompts' weight on the "
        f"name's tokens, {source}; ● marks the {report.k} ablated heads.{sink_note}</p>"
        f"{_head_map(report, report.name_score, 'viridis', False, ablated, '●', '.4f', sinks)}"
        f"<h2>Group contrast per head</h2><p class='small'>(name - evidence attention) for {escape(a)} minus that for "
        f"{escape(b)}, mean over pairs; red: {escape(a)} draws more attention to the name relative to the evidence; "
        f"● Benjamini-Hochberg q &lt; {ALPHA:g} (paired t-test).</p>"
        f"{_head_map(report, stats['mean'], 'RdBu_r', True, stats['t_q'] < ALPHA, '●', '+.4f')}"
        f"<h2>Heads with the largest name attention</h2>"
        f"{sink_para}{_top_heads(report)}"
        f"<h2>Pairs</h2><details><summary>{len(report.pairs)} pairs</summary>{_pairs(report)}</details>"
        f"<h2>Caveats</h2>{_list(report.caveats)}"
        f"<h2>Exact prompts</h2><p class='small'>Tokens as the model sees them.</p>"
        f"{''.join(_prompt(report, i) for i in range(len(report.prompts)))}"
        f"</div>"
    )
