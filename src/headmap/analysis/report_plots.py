"""Pictures of a corpus report: layer x head heatmaps, the layer-depth profile, roles, the head
dendrogram and the MDS map. Each names the model, the statistic and the corpus size in its title,
labels every layer, and carries the causation warning in its caption."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

# After headmap.render.static, which picks a headless backend before pyplot loads.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.patches import Patch

from headmap.render.profile import DEPTH_NOTE
from headmap.render.static import check_cmap, label_font, new_figure, wrap_lines

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: What each statistic means, for titles and captions.
STAT_LABELS = {
    "entropy": "mean row entropy (nats)",
    "entropy_norm": "normalized entropy (1 = uniform)",
    "distance": "mean attention distance |q-k| (tokens)",
    "first_share": "share on the first token",
    "special_share": "share on special tokens",
    "confidence": "confidence (mean row maximum)",
    "prev_share": "share on the previous token",
    "diag_share": "share on the query token itself",
    "next_share": "share on the next token",
}
ROLE_COLORS = {
    "previous-token": "#1f77b4",
    "next-token": "#17becf",
    "diagonal": "#9467bd",
    "first-token sink": "#d62728",
    "special-token": "#ff7f0e",
    "broad": "#2ca02c",
    "local": "#8c564b",
    "mixed": "#d9d9d9",
}
#: The closest pairs' marks on the MDS map: a saturated red no layer colour (viridis) comes near.
PAIR_COLOR = "#e41a1c"


def short_layers(layers: Sequence[str]) -> list[str]:
    """``layer.3`` -> ``3`` when every layer is a plain self-attention layer; names otherwise."""
    return (
        [n.split(".", 1)[1] for n in layers] if all(n.startswith("layer.") for n in layers) else list(layers)
    )


def _layer_ticks(ax: Axes, layers: Sequence[str], axis: str = "y", inches: float = 4.0) -> None:
    labels = short_layers(layers)
    step = max(1, int(np.ceil(len(layers) / max(1, inches * 72 / 7))))
    ticks = list(range(0, len(layers), step))
    font = label_font(inches, len(layers), step)
    if axis == "y":
        ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=font)
    else:
        wide = max(len(labels[i]) for i in ticks) > 3
        ax.set_xticks(ticks, [labels[i] for i in ticks], fontsize=font, rotation=90 if wide else 0)


def _title(ax: Axes, model: str, what: str, inches: float) -> None:
    """Model and subject, wrapped to the axes (a long title would be cut at the figure edge)."""
    lines = wrap_lines([model, what], inches, font=10)
    ax.set_title("\n".join(lines), fontsize=10, loc="left", parse_math=False)


def plot_layer_head(
    values: np.ndarray,
    layers: Sequence[str],
    heads: Sequence[int],
    model: str,
    what: str,
    cmap: str = "viridis",
    notes: Sequence[str] = (),
    vmin: float | None = None,
    vmax: float | None = None,
) -> Figure:
    """A ``[layer, head]`` heatmap: layers down the side (depth increasing downwards), heads along."""
    check_cmap(cmap)
    n_layers, n_heads = values.shape
    body = (0.42 * n_heads + 2.6, 0.24 * n_layers + 1.6)
    fig = new_figure(max(5.0, body[0]), max(3.0, body[1]), notes)
    ax = fig.add_subplot()
    finite = values[np.isfinite(values)]
    lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    image = ax.imshow(
        np.ma.masked_invalid(values),
        cmap=cmap,
        vmin=lo,
        vmax=hi if hi > lo else lo + 1e-9,
        aspect="auto",
        interpolation="nearest",
    )
    ax.set_xticks(range(n_heads), [str(h) for h in heads], fontsize=label_font(body[0] - 2.6, n_heads, 1))
    _layer_ticks(ax, layers, "y", body[1] - 1.6)
    ax.set_xlabel("head")
    ax.set_ylabel("layer (depth ↓)")
    if n_layers * n_heads <= 144:
        for (li, hi_), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(
                    hi_,
                    li,
                    f"{v:.2g}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if (v - lo) < 0.5 * (hi - lo) else "black",
                )
    fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
    _title(ax, model, what, max(5.0, body[0]) - 1.0)
    return fig


def plot_profile(
    mean: dict[str, np.ndarray],
    layers: Sequence[str],
    model: str,
    corpus: str,
    stats: Sequence[str] | None = None,
) -> Figure:
    """Per statistic and layer: the mean over heads (line), +-1 standard deviation across heads (band)
    and every head (dots)."""
    names = [s for s in (stats or list(mean)) if s in mean]
    cols = 3
    rows = int(np.ceil(len(names) / cols))
    fig = new_figure(4.2 * cols, 2.7 * rows + 0.6, [DEPTH_NOTE])
    axes = fig.subplots(rows, cols, squeeze=False)
    x = np.arange(len(layers))
    for ax in axes.flat[len(names) :]:
        ax.set_axis_off()
    for ax, name in zip(axes.flat, names):
        values = mean[name]  # [layer, head]
        counts = np.isfinite(values).sum(1)
        with np.errstate(invalid="ignore"):
            centre = np.where(counts > 0, np.nansum(values, 1) / np.maximum(counts, 1), np.nan)
            spread = np.sqrt(
                np.where(
                    counts > 0, np.nansum((values - centre[:, None]) ** 2, 1) / np.maximum(counts, 1), np.nan
                )
            )
        ax.fill_between(
            x, centre - spread, centre + spread, color="tab:blue", alpha=0.2, lw=0, label="±1 sd across heads"
        )
        for h in range(values.shape[1]):
            ax.plot(x, values[:, h], ".", color="0.45", ms=2.5, alpha=0.7)
        ax.plot(x, centre, color="tab:blue", lw=2, label="mean over heads")
        ax.set_title(STAT_LABELS.get(name, name), fontsize=9)
        _layer_ticks(ax, layers, "x", 3.6)
        ax.set_xlabel("layer (depth →)", fontsize=8)
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper right", fontsize=7)
    fig.suptitle(f"{model}\nlayer-depth profile · {corpus}", fontsize=10, x=0.02, ha="left", parse_math=False)
    return fig


def plot_roles(
    roles: np.ndarray,
    layers: Sequence[str],
    heads: Sequence[int],
    model: str,
    corpus: str,
    notes: Sequence[str] = (),
) -> Figure:
    """Each head's role as a coloured cell, layers down the side."""
    names = list(ROLE_COLORS)
    codes = np.vectorize(names.index)(roles) if roles.size else roles
    n_layers, n_heads = roles.shape
    fig = new_figure(max(6.5, 0.42 * n_heads + 4.6), max(3.0, 0.24 * n_layers + 1.6), notes)
    ax = fig.add_subplot()
    ax.imshow(
        codes,
        cmap=ListedColormap(list(ROLE_COLORS.values())),
        vmin=-0.5,
        vmax=len(names) - 0.5,
        aspect="auto",
        interpolation="nearest",
    )
    ax.set_xticks(range(n_heads), [str(h) for h in heads], fontsize=label_font(0.42 * n_heads, n_heads, 1))
    _layer_ticks(ax, layers, "y", 0.24 * n_layers)
    ax.set_xlabel("head")
    ax.set_ylabel("layer (depth ↓)")
    present = [n for n in names if (roles == n).any()]
    ax.legend(
        [Patch(color=ROLE_COLORS[n]) for n in present],
        present,
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
        fontsize=7,
        title="role",
        title_fontsize=8,
    )
    _title(ax, model, f"head roles · {corpus}", 0.42 * n_heads + 1.5)
    return fig


def _layer_colors(layer_of: Sequence[int], n_layers: int) -> list[tuple[float, float, float, float]]:
    # viridis up to green: its yellow end is unreadable as text on white.
    cmap = plt.get_cmap("viridis")
    return [cmap(0.85 * i / max(1, n_layers - 1)) for i in layer_of]


def plot_dendrogram(
    linkage: np.ndarray,
    labels: Sequence[str],
    layer_of: Sequence[int],
    layers: Sequence[str],
    model: str,
    corpus: str,
) -> Figure:
    """Hierarchical clustering of heads by distance; leaf labels coloured by layer."""
    from scipy.cluster.hierarchy import dendrogram

    n = len(labels)
    height = min(30.0, max(3.5, 0.085 * n + 1.5))
    fig = new_figure(
        7.5,
        height,
        [
            "average linkage on the head distances (mean over texts of the summed "
            "Jensen-Shannon divergence, Clark et al. 2019)"
        ],
    )
    ax = fig.add_subplot()
    tree = dendrogram(
        linkage,
        labels=list(labels),
        orientation="left",
        ax=ax,
        color_threshold=0,
        above_threshold_color="0.35",
        leaf_font_size=max(3.5, min(8.0, 600 / max(n, 1))),
    )
    colors = _layer_colors(layer_of, len(layers))
    for tick in ax.get_yticklabels():
        tick.set_color(colors[list(labels).index(tick.get_text())])
    ax.set_xlabel("distance (nats summed over query tokens)")
    _title(ax, model, f"head clustering · {corpus} · leaf colour = layer (dark: first, green: last)", 6.5)
    del tree
    return fig


def plot_mds(
    embedding: np.ndarray,
    labels: Sequence[str],
    layer_of: Sequence[int],
    layers: Sequence[str],
    model: str,
    corpus: str,
    pairs: Sequence[tuple[int, int]] = (),
) -> Figure:
    """Heads placed in 2-D by metric MDS on their distances, coloured by layer; ``pairs`` (near
    duplicates, closest first) are joined by thick red lines numbered 1, 2, ... and listed by name."""
    short = [label.replace("layer.", "L").replace("/head.", ".") for label in labels]
    listed = ", ".join(f"{rank}: {short[a]}–{short[b]}" for rank, (a, b) in enumerate(pairs, start=1))
    fig = new_figure(
        7.2,
        6.2,
        [
            "metric MDS (scikit-learn) on the precomputed head distances; axes have no "
            "units of their own, only distances between points matter",
            *([f"closest pairs (red, 1 = closest): {listed}"] if pairs else []),
        ],
    )
    ax = fig.add_subplot()
    for rank, (a, b) in enumerate(pairs, start=1):
        # Above the points and thick, so a pair of overlapping heads still shows its mark.
        ax.plot(
            embedding[[a, b], 0],
            embedding[[a, b], 1],
            color=PAIR_COLOR,
            lw=2.5,
            solid_capstyle="round",
            zorder=3,
            label="closest pairs (1 = closest)" if rank == 1 else None,
        )
        # A ring around both heads: the closest pairs often overlap, so the line alone is tiny.
        ax.scatter(
            embedding[[a, b], 0],
            embedding[[a, b], 1],
            s=90,
            facecolors="none",
            edgecolors=PAIR_COLOR,
            linewidths=1.8,
            zorder=3,
        )
        ax.annotate(
            str(rank),
            tuple(embedding[[a, b]].mean(axis=0)),
            xytext=(9, 9),  # beside the pair, not over its points
            textcoords="offset points",
            fontsize=7,
            fontweight="bold",
            color="white",
            ha="center",
            va="center",
            zorder=4,
            bbox={"boxstyle": "circle,pad=0.2", "facecolor": PAIR_COLOR, "edgecolor": "none"},
        )
    norm = Normalize(0, max(1, len(layers) - 1))
    points = ax.scatter(
        embedding[:, 0],
        embedding[:, 1],
        c=list(layer_of),
        cmap="viridis",
        norm=norm,
        s=18,
        edgecolors="black",
        linewidths=0.3,
        zorder=2,
    )
    if len(labels) <= 150:
        for (x, y), label in zip(embedding, short):
            ax.annotate(
                label,
                (x, y),
                fontsize=5,
                xytext=(2, 2),
                textcoords="offset points",
                color="0.25",
            )
    bar = fig.colorbar(points, ax=ax, fraction=0.05, pad=0.02)
    ticks = sorted({0, len(layers) - 1, *range(0, len(layers), max(1, len(layers) // 6))})
    bar.set_ticks(ticks, labels=[short_layers(layers)[i] for i in ticks])
    bar.set_label("layer")
    ax.set_aspect("equal", adjustable="datalim")
    if pairs:
        ax.legend(loc="best", fontsize=7)
    _title(ax, model, f"head map (MDS) · {corpus}" + (" · red: closest pairs" if pairs else ""), 6.0)
    return fig


__all__ = [
    "PAIR_COLOR",
    "ROLE_COLORS",
    "STAT_LABELS",
    "plot_dendrogram",
    "plot_layer_head",
    "plot_mds",
    "plot_profile",
    "plot_roles",
]
