"""The result of per-head statistics (:class:`HeadStats`): the table, its figures, page and files.
The statistics themselves are defined and computed in :mod:`headmap.analysis.stats`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from headmap.analysis.head_table import HeadTable
from headmap.analysis.report_plots import STAT_LABELS
from headmap.analysis.row_sums import STATS
from headmap.analysis.stats_io import short_summary, write_csv
from headmap.render.report import Report, json_number, write
from headmap.result import CAUSATION_WARNING, LayerKey
from headmap.tokens import Tokens

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class HeadStats(HeadTable, Report):
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
    labels: ClassVar[Mapping[str, str]] = STAT_LABELS

    def _what(self) -> str:
        return f"{len(self.tokens)} tokens"

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
