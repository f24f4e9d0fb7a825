"""The RAG report as one matplotlib figure: heatmap, attention vs ablation bars, lookback map, caveats."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from headmap.render.static import new_figure
from headmap.result import CAUSATION_WARNING
from headmap.view.downsample import shorten, visible

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from headmap.apps.rag.report import RagReport

_TEXT = {"parse_math": False}  # a "$" in a token or chunk is text, not a formula


def _labels(report: RagReport) -> list[str]:
    return [shorten(visible(f"[{c + 1}] {chunk.id}"), 18) for c, chunk in enumerate(report.chunks)]


def _token_heatmap(ax: Axes, report: RagReport) -> None:
    values = report.token_attention  # [answer_token, chunk]
    image = ax.imshow(values, cmap="viridis", vmin=0.0, aspect="auto", interpolation="nearest")
    ax.set_xticks(
        range(values.shape[1]),
        _labels(report),
        rotation=35,
        ha="right",
        rotation_mode="anchor",
        fontsize=8,
        **_TEXT,
    )
    tokens = [shorten(visible(t), 14) for t in report.answer_tokens]
    step = max(1, len(tokens) // 40)
    ax.set_yticks(range(0, len(tokens), step), tokens[::step], fontsize=7, **_TEXT)
    ax.set_ylabel("answer token (row: the position predicting it)", fontsize=8)
    ax.set_title(
        "attention on each chunk per answer token\n(mean over layers and heads)", fontsize=9, loc="left"
    )
    ax.figure.colorbar(image, ax=ax, fraction=0.06, pad=0.02).set_label("mass", fontsize=8)


def _attention_bars(ax: Axes, report: RagReport) -> None:
    y = np.arange(len(report.chunks))
    ax.barh(y - 0.2, report.attention, height=0.38, color="#9a9a9a")
    ax.barh(y + 0.2, report.calibrated_attention, height=0.38, color="#2b7bb9")
    ax.axvline(0, color="0.4", lw=0.8)
    flags = report.flags
    labels = [
        f"{label}\n(ignored)" if flag == "ignored" else label for label, flag in zip(_labels(report), flags)
    ]
    ax.set_yticks(y, labels, fontsize=8, **_TEXT)
    for tick, flag in zip(ax.get_yticklabels(), flags):
        if flag == "ignored":
            tick.set_color("#a33")
    ax.invert_yaxis()
    ax.set_xlabel("mean mass on the chunk", fontsize=8)
    ax.set_title(
        "attention evidence: grey = mass on the chunk,\nblue = calibrated (minus the dummy's mass)",
        fontsize=9,
        loc="left",
    )
    ax.tick_params(axis="x", labelsize=7)


def _drop_bars(ax: Axes, report: RagReport) -> None:
    y = np.arange(len(report.chunks))
    drop = report.logprob_drop
    ax.barh(y, drop, height=0.6, color=["#d0612a" if d >= 0 else "#7a9e5a" for d in drop])
    for c, d in enumerate(drop):
        ax.text(d, c, f" {d:+.2f} ", va="center", ha="left" if d >= 0 else "right", fontsize=7)
    ax.axvline(0, color="0.4", lw=0.8)
    ax.set_yticks(y, [""] * len(y))
    ax.invert_yaxis()
    ax.set_xlabel("log p(answer) drop when the chunk is removed", fontsize=8)
    ax.set_title("causal check: the answer's log-prob\nwithout the chunk (drop)", fontsize=9, loc="left")
    ax.tick_params(axis="x", labelsize=7)
    lo, hi = min(0.0, float(drop.min())), max(0.0, float(drop.max()))
    pad = 0.25 * (hi - lo or 1.0)
    ax.set_xlim(lo - (pad if lo < 0 else 0), hi + pad)


def _lookback(ax: Axes, report: RagReport) -> None:
    values = report.lookback.T  # [head, layer]
    image = ax.imshow(values, cmap="RdBu", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    layers = [name.rsplit(".", 1)[-1] for name in report.layers]
    step = max(1, len(layers) // 30)
    ax.set_xticks(range(0, len(layers), step), layers[::step], fontsize=7)
    ax.set_yticks(range(len(report.heads)), [str(h) for h in report.heads], fontsize=7)
    ax.set_xlabel("layer", fontsize=8)
    ax.set_ylabel("head", fontsize=8)
    mean = float(np.nanmean(report.lookback)) if np.isfinite(report.lookback).any() else float("nan")
    ax.set_title(
        f"lookback ratio per head (1 = reads the chunks, 0 = reads its own answer); mean {mean:.3f}",
        fontsize=9,
        loc="left",
    )
    ax.figure.colorbar(image, ax=ax, fraction=0.03, pad=0.01)


def report_figure(report: RagReport) -> Figure:
    """The figure of :meth:`RagReport.figure`; the caption holds the verdict and the caveats."""
    n_tokens = len(report.answer_tokens)
    top = float(np.clip(0.16 * max(n_tokens, len(report.chunks) * 1.6), 3.0, 8.0))
    notes = [report.verdict, *(line for line in report.caveats if line != CAUSATION_WARNING)]
    fig = new_figure(13.0, top + 3.4 + 0.6, notes)
    grid = fig.add_gridspec(2, 3, height_ratios=[top, 2.6], width_ratios=[1.1, 1.0, 0.8])
    _token_heatmap(fig.add_subplot(grid[0, 0]), report)
    _attention_bars(fig.add_subplot(grid[0, 1]), report)
    _drop_bars(fig.add_subplot(grid[0, 2]), report)
    _lookback(fig.add_subplot(grid[1, :]), report)
    question = shorten(visible(report.question), 110)
    answer = shorten(visible(report.answer), 110)
    fig.suptitle(
        f"{report.model} · RAG check\nQ: {question}\nA: {answer}",
        fontsize=10,
        x=0.01,
        ha="left",
        parse_math=False,
    )
    return fig
