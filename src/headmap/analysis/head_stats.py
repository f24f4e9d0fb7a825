"""The result of per-head statistics (:class:`HeadStats`): the table, its figures, page and files.
The statistics themselves are defined and computed in :mod:`headmap.analysis.stats`."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from headmap.analysis.report_html import figure_img
from headmap.analysis.report_plots import STAT_LABELS, plot_layer_head
from headmap.analysis.row_sums import STATS
from headmap.analysis.stats_io import short_summary, write_csv
from headmap.errors import HeadmapError
from headmap.render.report import Report, format_number, json_number, write
from headmap.result import CAUSATION_WARNING, LayerKey
from headmap.tokens import Tokens

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class HeadStats(Report):
    """Statistics of every captured head of one text. Each array is ``[layer, head]``.

    The report contract (:class:`~headmap.render.report.Report`): ``save`` writes ``.json``,
    ``.html``, pictures and ``.parquet`` (:meth:`to_pandas`), and ``.csv`` as before.
    """

    model: str
    tokens: Tokens
    layers: tuple[LayerKey, ...]
    heads: tuple[int, ...]
    entropy: np.ndarray
    entropy_norm: np.ndarray
    distance: np.ndarray
    first_share: np.ndarray
    special_share: np.ndarray
    confidence: np.ndarray
    prev_share: np.ndarray
    diag_share: np.ndarray
    overview: np.ndarray  # [layer, row_cell, key_cell], head-averaged and max-pooled
    overview_cell: tuple[int, int]  # (rows, keys) of the input per overview cell
    notes: tuple[str, ...] = ()  # how the capture and the statistics were computed

    def stat(self, name: str) -> np.ndarray:
        """The ``[layer, head]`` array of a statistic by name (one of :data:`STATS`)."""
        if name not in STATS:
            raise HeadmapError(f"unknown statistic {name!r}: choose from {', '.join(STATS)}")
        return getattr(self, name)

    def rows(self) -> list[dict[str, object]]:
        """One record per (layer, head), for tables and files."""
        out = []
        for li, key in enumerate(self.layers):
            for hi, head in enumerate(self.heads):
                record: dict[str, object] = {"layer": key.name, "head": head}
                record.update({name: float(self.stat(name)[li, hi]) for name in STATS})
                out.append(record)
        return out

    def format_table(self) -> str:
        header = f"{'layer':>9} {'head':>4} " + " ".join(f"{n:>13}" for n in STATS)
        lines = [header]
        for r in self.rows():
            lines.append(f"{r['layer']:>9} {r['head']:>4} " + " ".join(f"{r[n]:>13.4f}" for n in STATS))
        lines.append(f"# {len(self.tokens)} tokens, model {self.model}. {CAUSATION_WARNING}")
        return "\n".join(lines)

    # -- the report contract ---------------------------------------------------------------------
    tabular: ClassVar[bool] = True
    #: The statistics every HeadStats has (:data:`STATS`).
    statistics: ClassVar[tuple[str, ...]] = STATS

    def to_pandas(self) -> pd.DataFrame:
        """One row per (layer, head): ``layer``, ``head`` and every statistic as a column."""
        return pd.DataFrame(self.rows(), columns=["layer", "head", *STATS])

    def to_dict(self) -> dict[str, Any]:
        """The table as records (NaN, undefined for cross-attention, as None), with model and notes."""
        return {
            "model": self.model,
            "tokens": len(self.tokens),
            "layers": [k.name for k in self.layers],
            "head_numbers": list(self.heads),
            "statistics": list(STATS),
            "notes": list(self.notes),
            "warning": CAUSATION_WARNING,
            "heads": [
                {k: json_number(v) if isinstance(v, float) else v for k, v in record.items()}
                for record in self.rows()
            ],
        }

    def figure(self, stat: str = "entropy", cmap: str = "viridis", **options: Any) -> Figure:
        """Layer x head heatmap of one statistic (``stat``, one of :data:`STATS`)."""
        return plot_layer_head(
            self.stat(stat),
            [k.name for k in self.layers],
            list(self.heads),
            self.model,
            f"{STAT_LABELS.get(stat, stat)} · {len(self.tokens)} tokens",
            cmap,
            notes=self.notes,
        )

    def page(self, stat: str = "entropy", **options: Any) -> str:
        """The summary, one statistic's picture and the whole table, as one HTML fragment."""
        table = self.to_pandas().to_html(index=False, float_format=format_number, na_rep="n/a")
        picture = figure_img(self.figure(stat, **options), STAT_LABELS.get(stat, stat))
        return (
            f"<div><p>{html.escape(self.model)}: {len(self.tokens)} tokens, {len(self.layers)} layers x "
            f"{len(self.heads)} heads</p>{picture}{table}<p><em>{html.escape(CAUSATION_WARNING)}</em></p></div>"
        )

    def save(self, path: str | Path, **options: Any) -> Path:
        """Write by extension (see :meth:`formats`); ``.csv`` writes the table as before."""
        path = Path(path)
        if path.suffix.lower() == ".csv":
            return write_csv(self, path)
        return write(self, path, **options)

    def __repr__(self) -> str:
        return self.summary()

    def summary(self, top: int = 3) -> str:
        """A few lines: model, tokens, layers x heads, the statistics, and the most focused and the
        most sink-like heads (not the arrays: ``to_pandas()`` or ``format_table()`` has them all)."""
        return short_summary(self, top)
