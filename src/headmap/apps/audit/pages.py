"""The pages of an audit record's PDF, drawn from the record's dict alone (A4 portrait).

1. summary, decision and alternatives, caveats, provenance;
2. the explanation (the figure of :meth:`headmap.Explanation.figure`);
3. the heads: every head's single-ablation effect, the top heads and their roles;
4. the causal checks: output after removing the top words, faithfulness of each method.

Every text is drawn with ``parse_math=False``: a token such as ``$x$`` is text, not a formula.
"""

from __future__ import annotations

import shlex
import textwrap
from typing import TYPE_CHECKING, Any

import numpy as np

from headmap.attribution.explanation import Explanation
from headmap.render.report import format_number

if TYPE_CHECKING:
    from matplotlib.figure import Figure

A4 = (8.27, 11.69)
WIDTH = 100  # characters per line of body text at 8 pt on A4


class _Writer:
    """Lines of text down a page, wrapped, from the top."""

    def __init__(self, fig: Figure, top: float = 0.96, step: float = 0.0125) -> None:
        self.fig, self.y, self.step = fig, top, step

    def line(self, text: str, size: float = 8, weight: str = "normal", indent: float = 0.0) -> None:
        width = int(WIDTH * 8 / size) - int(indent * 120)
        for piece in textwrap.wrap(text, width) or [""]:
            if self.y < 0.02:
                return
            self.fig.text(
                0.05 + indent, self.y, piece, fontsize=size, weight=weight, parse_math=False, va="top"
            )
            self.y -= self.step * size / 8

    def gap(self, lines: float = 0.6) -> None:
        self.y -= self.step * lines


def _new(title: str) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=A4)
    fig.text(0.05, 0.985, title, fontsize=11, weight="bold", parse_math=False, va="top")
    return fig


def summary_page(data: dict[str, Any]) -> Figure:
    """Page 1: summary, decision, caveats and provenance."""
    s, p = data["settings"], data["provenance"]
    fig = _new(f"Audit record: {s['model']}")
    w = _Writer(fig, top=0.955)
    w.line("Summary", 10, "bold")
    for sentence in data["summary"]:
        w.line(sentence, 9)
    w.gap()
    w.line("Input", 10, "bold")
    w.line(repr(s["text"]) if len(s["text"]) < 600 else repr(s["text"][:600]) + " ...", 8)
    w.line(
        f"Explained output: {data['decision']['target'].get('description')} = "
        f"{format_number(data['decision']['output'], 6)}",
        8,
    )
    alts = data["decision"]["alternatives"]
    if alts:
        w.line("Top alternatives at the deciding position (log-probability, probability):", 8)
        for a in alts:
            w.line(
                f"{a['token']!r}: {format_number(a['logprob'], 4)}, {format_number(a['prob'], 3)}",
                8,
                indent=0.03,
            )
    w.gap()
    w.line("What to keep in mind", 10, "bold")
    for caveat in data["caveats"][:6]:
        w.line(f"- {caveat}", 7.5)
    w.gap()
    w.line("Provenance", 10, "bold")
    runtime = p["runtime"]
    versions = ", ".join(f"{k} {v}" for k, v in p["versions"].items() if v)
    w.line(f"versions: {versions}", 7)
    w.line(
        f"dtype {runtime['dtype']}, device {runtime['device']}, {runtime['threads']} thread(s), seed {s['seed']}, "
        f"methods {', '.join(s['methods'])}",
        7,
    )
    w.line(f"command: {shlex.join(p['command'])}", 7)
    for f in p["files"]:
        w.line(f"{f['role']} {f['path']} ({f['bytes']} bytes) sha256 {f['sha256']}", 6.5)
    if not p["files"]:
        w.line("no model files (a model built in memory): this record cannot be verified", 7)
    return fig


def heads_page(data: dict[str, Any]) -> Figure:
    """Page 3: every head's effect when zeroed alone, and the top heads with their roles."""
    heads = data["heads"]
    fig = _new("Heads most involved")
    effects = np.array([[np.nan if v is None else v for v in row] for row in heads["effects"]], dtype=float)
    ax = fig.add_axes((0.12, 0.5, 0.75, 0.4))
    limit = float(np.nanmax(np.abs(effects))) if np.isfinite(effects).any() else 1.0
    image = ax.imshow(effects, cmap="RdBu_r", vmin=-limit or -1, vmax=limit or 1, aspect="auto")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_yticks(range(len(heads["layers"])), heads["layers"], fontsize=6)
    ax.set_title("change of the explained output when one head is zeroed", fontsize=9, parse_math=False)
    fig.colorbar(image, ax=ax, shrink=0.8)
    w = _Writer(fig, top=0.44)
    w.line(f"Chosen: {heads['chosen_by']}.", 8)
    w.gap()
    for h in heads["top"]:
        stats = ", ".join(f"{k} {format_number(v, 3)}" for k, v in (h.get("stats") or {}).items())
        w.line(
            f"{h['layer']} head {h['head']}: effect {format_number(h['effect'], 3, signed=True)}; "
            f"role {h.get('role', 'n/a')} ({stats})",
            8,
        )
        description = heads["roles"]["descriptions"].get(h.get("role"))
        if description:
            w.line(description, 7, indent=0.03)
    t = heads["together"]
    w.gap()
    w.line(
        f"All {len(t['heads'])} together: output {format_number(t['output'], 6)}, "
        f"effect {format_number(t['effect'], 3, signed=True)}.",
        8,
    )
    w.line(f"Roles measured over {heads['roles']['texts']} reference sentences.", 8)
    return fig


def causal_page(data: dict[str, Any]) -> Figure:
    """Page 4: removing the top words of each method, and the faithfulness table."""
    fig = _new("Causal checks")
    ax = fig.add_axes((0.1, 0.6, 0.8, 0.32))
    output = data["decision"]["output"]
    for method, steps in data["causal"]["removal"].items():
        ks = [0] + [r["k"] for r in steps]
        values = [output] + [np.nan if r["output"] is None else r["output"] for r in steps]
        ax.plot(ks, values, marker="o", label=method)
    ax.set(xlabel="top words removed", ylabel="explained output")
    ax.set_title("the output after removing each method's top words", fontsize=9, parse_math=False)
    ax.legend(fontsize=7)
    w = _Writer(fig, top=0.53)
    w.line(
        "Faithfulness over the words (higher AOPC and comprehensiveness, lower sufficiency: better)",
        9,
        "bold",
    )
    w.line(f"{'method':<24}{'AOPC':>10}{'random':>10}{'compr.':>10}{'suff.':>10}{'LOO rho':>10}", 8)
    for method, f in data["faithfulness"].items():
        cells = "".join(
            f"{format_number(np.nan if f[k] is None else f[k], 3):>10}"
            for k in ("aopc", "random_aopc", "comprehensiveness", "sufficiency", "loo_spearman")
        )
        w.line(f"{method:<24}{cells}", 8)
    w.gap()
    for method, steps in data["causal"]["removal"].items():
        if steps:
            last = steps[-1]
            words = ", ".join(repr(x.strip()) for x in last["words"])
            w.line(
                f"{method}: removing {words} changes the output by "
                f"{format_number(np.nan if last['drop'] is None else -last['drop'], 3, signed=True)}",
                8,
            )
    return fig


def pages(data: dict[str, Any], explanation: Explanation) -> list[Figure]:
    """Every page, in order."""
    return [summary_page(data), explanation.figure(), heads_page(data), causal_page(data)]


__all__ = ["pages"]
