"""The audit record as a self-contained HTML fragment: inline styles, no script, no outside URL.

Every piece of text that came from the input, the tokenizer or the file system goes through
:func:`headmap.render.html.escape` (control characters shown, quotes and ``$`` escaped), so a
hostile token is shown as text and never runs. The full record is appended as escaped JSON in a
``<details>`` block, not in a script element.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

import numpy as np

from headmap.apps.html_parts import cell_colors
from headmap.render.html import escape as e
from headmap.render.report import format_number

STYLE = (
    "font-family:system-ui,sans-serif;max-width:60em;line-height:1.4;color:#111;background:#fff;padding:0.5em"
)
TABLE = "border-collapse:collapse;font-size:0.9em;margin:0.3em 0"
CELL = "border:1px solid #ccc;padding:2px 6px"


def _n(value: Any, digits: int = 3, signed: bool = False) -> str:
    return e(format_number(np.nan if value is None else value, digits, signed=signed))


def _table(header: list[str], rows: list[list[str]]) -> str:
    """A table of already-escaped cells."""
    head = "".join(f"<th style='{CELL}'>{e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td style='{CELL}'>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table style='{TABLE}'><tr>{head}</tr>{body}</table>"


def _words(data: dict[str, Any]) -> str:
    """Each method's word scores as coloured words (occlusion's scale is signed)."""
    ex = data["explanation"]
    words = ex["words"]["tokens"]
    rows = []
    for method, scores in ex["methods"].items():
        values = np.array([np.nan if v is None else v for v in scores["word_scores"]], dtype=float)
        finite = values[np.isfinite(values)]
        top = float(np.abs(finite).max()) if finite.size else 1.0
        lo, hi, cmap = (-top, top, "RdBu_r") if scores["signed"] else (0.0, top, "Blues")
        cells = []
        for word, value in zip(words, values):
            bg, fg = cell_colors(float(value), lo, hi, cmap)
            cells.append(
                f"<span style='background:{bg};color:{fg};padding:1px 3px;margin:1px;display:inline-block' "
                f"title='{_n(value, 4)}'>{e(word)}</span>"
            )
        flag = f" ({e(scores['flag'])})" if scores.get("flag") else ""
        rows.append(f"<div><b>{e(method)}</b>{flag}: {''.join(cells)}</div>")
    return "".join(rows)


def _provenance(p: dict[str, Any], s: dict[str, Any]) -> str:
    files = [
        [e(f["role"]), f"<code>{e(f['path'])}</code>", e(str(f["bytes"])), f"<code>{e(f['sha256'])}</code>"]
        for f in p["files"]
    ]
    runtime = ", ".join(f"{e(k)} {e(str(v))}" for k, v in p["runtime"].items())
    versions = ", ".join(f"{e(k)} {e(str(v))}" for k, v in p["versions"].items())
    settings = ", ".join(f"{e(k)}={e(repr(v))}" for k, v in s.items() if k not in ("text", "corpus", "notes"))
    missing = (
        ""
        if p["files"]
        else "<p>No model files (a model built in memory): this record cannot be verified.</p>"
    )
    return (
        _table(["role", "file", "bytes", "sha256"], files)
        + missing
        + f"<p>versions: {versions}</p><p>runtime: {runtime}</p><p>settings: {settings}</p>"
        + f"<p>command: <code>{e(shlex.join(p['command']))}</code></p>"
        + f"<p>text sha256: <code>{e(str(p.get('text_sha256')))}</code></p>"
    )


def fragment(data: dict[str, Any]) -> str:
    """The record as one HTML fragment."""
    s, p, d, heads = data["settings"], data["provenance"], data["decision"], data["heads"]
    summary = "".join(f"<li>{e(line)}</li>" for line in data["summary"])
    alternatives = (
        _table(
            ["token", "log-probability", "probability"],
            [
                [f"<code>{e(repr(a['token']))}</code>", _n(a["logprob"], 4), _n(a["prob"], 3)]
                for a in d["alternatives"]
            ],
        )
        if d["alternatives"]
        else "<p>The explained output is not a token's probability: no alternatives.</p>"
    )
    agreement = _table(
        ["method", "Spearman", "Spearman of |scores|", "Kendall", "words"],
        [
            [e(r["method"]), _n(r["spearman"], 2), _n(r["spearman_abs"], 2), _n(r["kendall"], 2), _n(r["n"])]
            for r in data["agreement_with_occlusion"]
        ],
    )
    faith = _table(
        ["method", "AOPC", "random AOPC", "comprehensiveness", "sufficiency", "LOO Spearman"],
        [
            [e(m)]
            + [_n(f[k]) for k in ("aopc", "random_aopc", "comprehensiveness", "sufficiency", "loo_spearman")]
            for m, f in data["faithfulness"].items()
        ],
    )
    top = _table(
        ["layer", "head", "effect when zeroed", "role", "statistics over the reference texts"],
        [
            [
                e(h["layer"]),
                e(str(h["head"])),
                _n(h["effect"], 3, True),
                e(str(h.get("role", "n/a"))),
                e(
                    ", ".join(
                        f"{k} {format_number(np.nan if v is None else v, 3)}"
                        for k, v in (h.get("stats") or {}).items()
                    )
                ),
            ]
            for h in heads["top"]
        ],
    )
    t = heads["together"]
    removal = _table(
        ["method", "words removed", "output after", "drop"],
        [
            [
                e(m),
                e(", ".join(repr(w.strip()) for w in r["words"])),
                _n(r["output"], 4),
                _n(r["drop"], 3, True),
            ]
            for m, steps in data["causal"]["removal"].items()
            for r in steps
        ],
    )
    caveats = "".join(f"<li>{e(c)}</li>" for c in data["caveats"])
    raw = e(json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False))
    return (
        f"<div class='headmap-audit' style='{STYLE}'>"
        f"<h2>Audit record: {e(s['model'])}</h2>"
        f"<h3>Summary</h3><ul>{summary}</ul>"
        f"<h3>Input and output</h3><pre style='white-space:pre-wrap'>{e(s['text'])}</pre>"
        f"<p>{e(str(d['target'].get('description')))} = {_n(d['output'], 6)}</p>{alternatives}"
        f"<h3>Evidence: word scores of each method</h3>{_words(data)}"
        f"<h4>Agreement with occlusion (the causal reference)</h4>{agreement}"
        f"<h4>Faithfulness</h4>{faith}"
        f"<h3>Heads most involved</h3><p>{e(heads['chosen_by'])}.</p>{top}"
        f"<p>All {len(t['heads'])} zeroed together: effect {_n(t['effect'], 3, True)} "
        f"(output {_n(t['output'], 6)}).</p>"
        f"<h3>Causal checks: removing the top words</h3>{removal}"
        f"<h3>What to keep in mind</h3><ul>{caveats}</ul>"
        f"<h3>Provenance</h3>{_provenance(p, s)}"
        f"<details><summary>the full record (JSON)</summary><pre style='white-space:pre-wrap'>{raw}</pre></details>"
        "</div>"
    )


__all__ = ["fragment"]
