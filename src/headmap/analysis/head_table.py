"""What every ``[layer, head]`` statistics report shares: lookup by name, records, the table, the
layer x head picture and the HTML fragment (:class:`HeadTable`, mixed into
:class:`~headmap.analysis.head_stats.HeadStats` and :class:`~headmap.analysis.patch_stats.PatchStats`)."""

from __future__ import annotations

import html
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from headmap.analysis.report_html import figure_img
from headmap.analysis.report_plots import plot_layer_head
from headmap.errors import HeadmapError
from headmap.render.report import format_number
from headmap.result import CAUSATION_WARNING, LayerKey

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class HeadTable:
    """A report holding one ``[layer, head]`` array per name in :attr:`statistics` (as attributes).

    A subclass sets :attr:`statistics` and :attr:`labels` and says what was measured in :meth:`_what`
    ("12 tokens", "20 images (4x4 patches)").
    """

    model: str
    layers: tuple[LayerKey, ...]
    heads: tuple[int, ...]
    notes: tuple[str, ...]
    statistics: ClassVar[tuple[str, ...]] = ()
    #: Picture titles per statistic (a name without one is its own title).
    labels: ClassVar[Mapping[str, str]] = MappingProxyType({})

    def _what(self) -> str:
        raise NotImplementedError

    def stat(self, name: str) -> np.ndarray:
        """The ``[layer, head]`` array of a statistic by name (one of :attr:`statistics`)."""
        if name not in self.statistics:
            raise HeadmapError(f"unknown statistic {name!r}: choose from {', '.join(self.statistics)}")
        values: np.ndarray = getattr(self, name)
        return values

    def rows(self) -> list[dict[str, Any]]:
        """One record per (layer, head): ``layer``, ``head`` and every statistic."""
        return [
            {
                "layer": key.name,
                "head": head,
                **{name: float(self.stat(name)[li, hi]) for name in self.statistics},
            }
            for li, key in enumerate(self.layers)
            for hi, head in enumerate(self.heads)
        ]

    def to_pandas(self) -> pd.DataFrame:
        """One row per (layer, head): ``layer``, ``head`` and every statistic as a column."""
        return pd.DataFrame(self.rows(), columns=["layer", "head", *self.statistics])

    def figure(self, stat: str = "entropy", cmap: str = "viridis", **options: Any) -> Figure:
        """Layer x head heatmap of one statistic (``stat``, one of :attr:`statistics`)."""
        return plot_layer_head(
            self.stat(stat),
            [k.name for k in self.layers],
            list(self.heads),
            self.model,
            f"{self.labels.get(stat, stat)} · {self._what()}",
            cmap,
            notes=self.notes,
        )

    def page(self, stat: str = "entropy", **options: Any) -> str:
        """The summary, one statistic's picture and the whole table, as one HTML fragment."""
        table = self.to_pandas().to_html(index=False, float_format=format_number, na_rep="n/a")
        picture = figure_img(self.figure(stat, **options), self.labels.get(stat, stat))
        return (
            f"<div><p>{html.escape(self.model)}: {html.escape(self._what())}, {len(self.layers)} layers x "
            f"{len(self.heads)} heads</p>{picture}{table}<p><em>{html.escape(CAUSATION_WARNING)}</em></p></div>"
        )
