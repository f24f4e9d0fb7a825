"""Drawing a training monitor file: each head's statistic over steps, and the layer means."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

# After headmap.render.static, which picks a headless backend before pyplot loads.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.ticker import MaxNLocator

from headmap.analysis.monitor import KEY_COLUMNS, read_monitor
from headmap.analysis.report_plots import STAT_LABELS
from headmap.errors import HeadmapError
from headmap.render.profile import DEPTH_NOTE
from headmap.render.static import new_figure
from headmap.result import LayerKey

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


def _layer_order(names: list[str]) -> list[str]:
    return sorted(names, key=lambda n: LayerKey.parse(n).sort_key)


def plot_monitor(data: pd.DataFrame | str | Path, stat: str = "entropy", title: str | None = None) -> Figure:
    """Left: every head's ``stat`` against the training step, coloured by layer; right: each layer's
    mean over its heads. ``data`` is a monitor DataFrame or file."""
    frame = read_monitor(data) if isinstance(data, (str, Path)) else data
    if stat not in frame.columns or stat in KEY_COLUMNS:
        stats = [c for c in frame.columns if c not in KEY_COLUMNS]
        raise HeadmapError(f"the monitor has no statistic {stat!r}: choose from {', '.join(stats)}")
    layers = _layer_order(list(frame["layer"].unique()))
    steps = np.sort(frame["step"].unique())
    cmap = plt.get_cmap("viridis")
    color = {name: cmap(0.9 * i / max(1, len(layers) - 1)) for i, name in enumerate(layers)}
    fig = new_figure(
        11.0, 4.6, [f"{len(steps)} recorded steps; probe-text statistics in eval mode", DEPTH_NOTE]
    )
    left, right = fig.subplots(1, 2, sharey=True)
    for (layer, _head), rows in frame.groupby(["layer", "head"], sort=False):
        rows = rows.sort_values("step")
        left.plot(rows["step"], rows[stat], color=color[layer], lw=0.7, alpha=0.6)
    means = frame.groupby(["layer", "step"])[stat].mean()
    for layer in layers:
        series = means.loc[layer]
        right.plot(
            series.index,
            series.values,
            color=color[layer],
            lw=1.8,
            marker="." if len(steps) < 40 else None,
            label=layer,
        )
    for ax, what in ((left, "every head"), (right, "mean over each layer's heads")):
        ax.set_xlabel("training step")
        ax.set_title(what, fontsize=9)
        ax.grid(alpha=0.3)
        if np.all(np.mod(steps, 1) == 0):
            # Steps are counts: ticks at 0.5 would name steps that do not exist.
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_ylabel(STAT_LABELS.get(stat, stat))
    if len(layers) <= 16:
        right.legend(fontsize=7, loc="best", ncols=2 if len(layers) > 8 else 1)
    else:
        bar = fig.colorbar(
            ScalarMappable(Normalize(0, (len(layers) - 1) / 0.9), cmap), ax=right, fraction=0.05
        )
        ticks = list(range(0, len(layers), max(1, len(layers) // 6)))
        bar.set_ticks(ticks, labels=[layers[i] for i in ticks])
        bar.set_label("layer")
    fig.suptitle(
        title or f"{STAT_LABELS.get(stat, stat)} during training",
        fontsize=10,
        x=0.02,
        ha="left",
        parse_math=False,
    )
    return fig


__all__ = ["plot_monitor"]
