"""The RAG report as one self-contained HTML page: plain HTML and CSS, no script, nothing fetched.

Every text that comes from the user or the model (question, chunks, ids, answer tokens, prompts,
the model name) is HTML-escaped here; the page has no ``<script>`` at all, so nothing can break
out of one. Colours come from matplotlib colormaps, computed at write time.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from headmap.apps.html_parts import bar_limit, cell_colors, svg_bar
from headmap.render.html import escape
from headmap.view.downsample import shorten

if TYPE_CHECKING:
    from headmap.apps.rag.report import RagReport

_STYLE = """
.hm-rag { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; max-width: 1200px; }
.hm-rag h1 { font-size: 20px; margin: 4px 0 8px; } .hm-rag h2 { font-size: 16px; margin: 22px 0 6px; }
.hm-rag p { margin: 4px 0; line-height: 1.45; } .hm-rag .verdict { background: #f4f4ef; padding: 8px 10px; }
.hm-rag table { border-collapse: collapse; font-size: 12px; }
.hm-rag th, .hm-rag td { padding: 2px 6px; text-align: left; vertical-align: middle; }
.hm-rag td.cell { text-align: center; min-width: 44px; font-variant-numeric: tabular-nums; }
.hm-rag td.num { text-align: right; font-variant-numeric: tabular-nums; }
.hm-rag .chunk { white-space: pre-wrap; margin: 6px 0; padding: 6px 8px; border-left: 4px solid #ccc;
  font-size: 13px; line-height: 1.7; } .hm-rag .chunk .lab { font-weight: 600; margin-right: 6px; }
.hm-rag .ignored { color: #a33; font-weight: 600; } .hm-rag pre { white-space: pre-wrap; font-size: 12px; }
.hm-rag .small { color: #555; font-size: 12px; } .hm-rag td.lb { width: 20px; height: 14px; padding: 0; }
"""


def _chunk_label(report: RagReport, c: int) -> str:
    return f"[{c + 1}] {report.chunks[c].id}"


def _bars(report: RagReport) -> str:
    att, cal, drop = report.attention, report.calibrated_attention, report.logprob_drop
    att_lim, cal_lim, drop_lim = bar_limit(att), bar_limit(cal), bar_limit(drop)
    rows = []
    for c in range(len(report.chunks)):
        flag = report.flags[c]
        flag_html = f"<span class='ignored'>{flag}</span>" if flag == "ignored" else flag
        rows.append(
            f"<tr><td>{escape(_chunk_label(report, c))}</td>"
            f"<td class='num'>{att[c]:.4f}</td><td>{svg_bar(att[c], att_lim, '#8a8a8a')}</td>"
            f"<td class='num'>{cal[c]:+.4f}</td><td>{svg_bar(cal[c], cal_lim, '#2b7bb9')}</td>"
            f"<td class='num'>{drop[c]:+.3f}</td><td>{svg_bar(drop[c], drop_lim, '#d0612a')}</td>"
            f"<td>{flag_html}</td></tr>"
        )
    head = (
        "<tr><th>chunk</th><th colspan='2'>attention (mean mass)</th><th colspan='2'>calibrated "
        "(minus dummy)</th><th colspan='2'>log-prob drop when removed</th><th>flag</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def _heatmap(report: RagReport) -> str:
    values = report.token_attention  # [answer_token, chunk]
    lo, hi = 0.0, float(values.max()) if values.size else 1.0
    head = "".join(
        f"<th title='{escape(report.chunks[c].text)}'>{escape(shorten(_chunk_label(report, c), 24))}</th>"
        for c in range(values.shape[1])
    )
    rows = []
    for t, token in enumerate(report.answer_tokens):
        cells = []
        for c in range(values.shape[1]):
            bg, fg = cell_colors(values[t, c], lo, hi, "viridis")
            cells.append(
                f"<td class='cell' style='background:{bg};color:{fg}' "
                f"title='{escape(token)} → {escape(_chunk_label(report, c))}: {values[t, c]:.4f}'>"
                f"{values[t, c]:.3f}</td>"
            )
        rows.append(f"<tr><th>{t}: {escape(shorten(token, 20))}</th>{''.join(cells)}</tr>")
    return f"<table><tr><th>answer token</th>{head}</tr>{''.join(rows)}</table>"


def _chunk_texts(report: RagReport) -> str:
    top = max((float(p.max()) for p in report.piece_attention if p.size), default=1.0) or 1.0
    blocks = []
    for c, (pieces, weights) in enumerate(zip(report.chunk_pieces, report.piece_attention)):
        spans = []
        for piece, weight in zip(pieces, weights):
            bg, _ = cell_colors(weight, 0.0, top, "Oranges")
            spans.append(f"<span style='background:{bg}' title='{weight:.5f}'>{html.escape(piece)}</span>")
        bg, _ = cell_colors(report.attention[c], 0.0, float(report.attention.max()), "Oranges")
        blocks.append(
            f"<div class='chunk' style='border-left-color:{bg}'><span class='lab'>"
            f"{escape(_chunk_label(report, c))}</span>{''.join(spans)}</div>"
        )
    return "".join(blocks)


def _lookback(report: RagReport) -> str:
    if not np.isfinite(report.lookback).any():
        return "<p class='small'>No lookback ratio: the answer has a single token (step 0 has no generated tokens).</p>"
    head = "".join(f"<th>{h}</th>" for h in report.heads)
    rows = []
    for li, layer in enumerate(report.layers):
        cells = []
        for hi, h in enumerate(report.heads):
            value = report.lookback[li, hi]
            bg, _ = cell_colors(value, 0.0, 1.0, "RdBu")
            cells.append(
                f"<td class='lb' style='background:{bg}' title='{escape(layer)}, head {h}: {value:.3f}'></td>"
            )
        rows.append(f"<tr><th>{escape(layer)}</th>{''.join(cells)}</tr>")
    return (
        f"<p class='small'>Blue: the head reads the chunks (ratio near 1); red: it reads the answer so far "
        f"(near 0). Mean over heads: {float(np.nanmean(report.lookback)):.3f}.</p>"
        f"<table><tr><th>layer \\ head</th>{head}</tr>{''.join(rows)}</table>"
    )


def _list(lines: Sequence[str]) -> str:
    return "<ul>" + "".join(f"<li>{escape(line)}</li>" for line in lines) + "</ul>"


def report_body(report: RagReport) -> str:
    """The report as an HTML fragment (its own scoped style), for notebooks and for the page."""
    source = (
        f"generated greedily, at most {report.max_new_tokens} new tokens" if report.generated else "given"
    )
    if report.truncated:
        source += ", cut there before the model ended it"
    without = "".join(
        f"<details><summary>{escape(_chunk_label(report, c))} removed: log p = "
        f"{report.logprob_without[c]:.4f}</summary><pre>{html.escape(text)}</pre></details>"
        for c, text in enumerate(report.prompts_without)
    )
    return (
        f"<div class='hm-rag'><style>{_STYLE}</style>"
        f"<h1>RAG check · {escape(report.model)}</h1>"
        f"<p><strong>Question:</strong> {html.escape(report.question)}</p>"
        f"<p><strong>Answer</strong> ({source}, {len(report.answer_ids)} tokens): {html.escape(report.answer)}</p>"
        f"<p class='small'>log p(answer | all chunks) = {report.answer_logprob:.4f} (teacher-forced)</p>"
        f"<p class='verdict'>{escape(report.verdict)}</p>"
        f"<h2>Attention beside the causal check</h2>{_bars(report)}"
        f"<p class='small'>Spearman (attention vs drop) = {report.spearman:.3f}; calibrated vs drop = "
        f"{report.spearman_calibrated:.3f}.</p>{_costs(report)}"
        f"<h2>Attention per answer token and chunk</h2>"
        f"<p class='small'>Mean over layers and heads of each row's weight on the chunk's tokens; row t is the "
        f"position that predicts answer token t.</p>{_heatmap(report)}"
        f"<h2>Chunk texts coloured by attention</h2>"
        f"<p class='small'>Each token's weight, mean over layers, heads and answer rows.</p>{_chunk_texts(report)}"
        f"<h2>Lookback ratio per layer and head</h2>{_lookback(report)}"
        f"<h2>Caveats</h2>{_list(report.caveats)}"
        f"<h2>Exact prompts</h2><details><summary>full prompt ({len(report.prompt_ids)} tokens)</summary>"
        f"<pre>{html.escape(report.prompt)}</pre></details>{without}"
        f"</div>"
    )


def _costs(report: RagReport) -> str:
    """Each attribution's cost in forwards and its agreement with leave-one-out, as a small table."""
    rows = "".join(
        f"<tr><td>{escape(str(r.method))}</td><td>{int(r.forwards)}</td><td>{r.spearman:.3f}</td>"
        f"<td>{'yes' if r.same_top else 'no'}</td></tr>"
        for r in report.costs.itertuples()
    )
    return (
        "<table class='small'><tr><th>method</th><th>forwards</th><th>Spearman with leave-one-out</th>"
        f"<th>same top chunk</th></tr>{rows}</table>"
    )
