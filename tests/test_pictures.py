"""Pictures a new user misread (issue 17, item 10), checked through the figure objects and the
dashboard's HTML/CSS rather than pixels."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

import headmap.serve.app as app
from headmap.analysis.monitor_plot import plot_monitor
from headmap.analysis.report_plots import plot_mds
from headmap.apps.prune.figure import curve_figure
from headmap.apps.prune.quality import PERPLEXITY
from headmap.serve.payload import message

ASSETS = Path(__file__).resolve().parent.parent / "src" / "headmap" / "render" / "assets"


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_mds_closest_pairs_are_thick_numbered_and_named():
    embedding = np.array([[0.0, 0.0], [0.02, 0.0], [1.0, 1.0], [1.0, 1.03], [2.0, 0.0], [0.0, 2.0]])
    labels = [f"layer.{i // 2}/head.{i % 2}" for i in range(6)]
    layers = ["layer.0", "layer.1", "layer.2"]
    fig = plot_mds(embedding, labels, [0, 0, 1, 1, 2, 2], layers, "m", "c", [(0, 1), (2, 3)])
    ax = fig.axes[0]
    marks = [line for line in ax.get_lines() if len(line.get_xdata()) == 2]
    assert len(marks) == 2
    points = max(ax.collections, key=lambda c: len(c.get_offsets()))  # every head, by layer
    rings = [c for c in ax.collections if len(c.get_offsets()) == 2]
    assert len(rings) == 2 and all(c.get_zorder() > points.get_zorder() for c in rings)
    for line in marks:
        assert line.get_linewidth() >= 2.0  # was 0.8: lost among the points
        assert line.get_alpha() in (None, 1.0)
        assert line.get_zorder() > points.get_zorder()  # drawn over the points it joins
        red, green, blue = (int(to_hex(line.get_color())[i : i + 2], 16) for i in (1, 3, 5))
        assert red > 200 and green < 80 and blue < 80
    numbers = [t.get_text() for t in ax.texts if t.get_text() in ("1", "2")]
    assert sorted(numbers) == ["1", "2"]
    legend = ax.get_legend()
    assert legend is not None and "closest pairs" in legend.get_texts()[0].get_text()
    caption = " ".join(t.get_text() for t in fig.texts)
    assert "1: L0.0–L0.1" in caption and "2: L1.0–L1.1" in caption
    # Without pairs: no marks, no legend.
    plain = plot_mds(embedding, labels, [0, 0, 1, 1, 2, 2], layers, "m", "c")
    assert plain.axes[0].get_legend() is None and not plain.axes[0].get_lines()


def _prune_report(seeds: tuple[int, ...]) -> SimpleNamespace:
    """The parts of a PruneReport the curve figure reads, without measuring a model."""

    def curve(name: str, seed: int | None, values: list[float]) -> SimpleNamespace:
        return SimpleNamespace(
            order=SimpleNamespace(name=name, seed=seed), counts=(0, 2, 4), values={"perplexity": values}
        )

    curves = [curve("importance", None, [10.0, 11.0, 14.0])]
    curves += [curve("random", seed, [10.0, 12.0 + seed, 20.0 + seed]) for seed in seeds]
    return SimpleNamespace(
        curves=curves,
        total_heads=8,
        baseline={"perplexity": 10.0},
        pruning=None,
        metrics=(PERPLEXITY,),
        loss="next-token cross-entropy",
        summary=[],
        n_texts=4,
        texts="texts.txt",
        step=0.25,
        n_heldout=2,
        heldout="held.txt",
        caveats=[""],
        model="m",
    )


def _legend(seeds: tuple[int, ...]) -> list[str]:
    fig = curve_figure(_prune_report(seeds))
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_prune_legend_with_one_seed_names_the_seed():
    one = [text for text in _legend((0,)) if text.startswith("random")]
    assert one == ["random, seed 0"]
    several = [text for text in _legend((0, 1)) if text.startswith("random")]
    assert several == ["random, geometric mean of seeds 0, 1 (thin: each)"]


def test_monitor_plot_ticks_integer_steps_only():
    frame = pd.DataFrame(
        [
            {"step": step, "layer": f"layer.{layer}", "head": head, "entropy": 1.0 + 0.1 * step + layer}
            for step in (0, 1, 2)
            for layer in (0, 1)
            for head in (0, 1)
        ]
    )
    fig = plot_monitor(frame)
    fig.canvas.draw()
    for ax in fig.axes[:2]:
        low, high = ax.get_xlim()
        shown = [t for t in ax.get_xticks() if low <= t <= high]
        assert shown and all(float(t).is_integer() for t in shown), shown


def _rule(css: str, selector: str) -> str:
    found = re.search(re.escape(selector) + r"\s*\{([^}]*)\}", css)
    assert found, selector
    return found.group(1)


def test_dashboard_start_hint_is_neutral_not_an_error():
    assert app.START_HINT["kind"] == "message" and app.START_HINT["tone"] == "hint"
    assert "Press Show" in str(app.START_HINT["message"])
    assert message("the text is empty")["tone"] == "error"
    css = (ASSETS / "heatmap.css").read_text(encoding="utf-8")
    hint, error = _rule(css, ".hm-hint"), _rule(css, ".hm-message")
    assert "#c0392b" in error  # errors keep their red bar
    assert "border-left" not in hint and not re.search(r"#(c0|fd|7b)", hint)  # no red bar, tint, text
    script = (ASSETS / "heatmap.js").read_text(encoding="utf-8")
    assert 'hint ? "hm-hint" : "hm-message"' in script and "payload.tone" in script
