"""Writing per-head statistics tables: CSV, JSON or Parquet, chosen by the file extension."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from headmap.errors import HeadmapError
from headmap.render.report import COMMON, Format, check_writable, format_number

if TYPE_CHECKING:
    from headmap.analysis.stats import HeadStats

#: What ``HeadStats.save`` writes: ``.csv`` and the report contract's formats.
STATS_EXTENSIONS = (".csv", *(fmt.value for fmt in (*COMMON, Format.PARQUET)))


def write_csv(stats: HeadStats, path: Path) -> Path:
    """The table (one row per layer x head) as CSV; NaN cells are written as ``nan``."""
    check_writable(path)
    records = stats.rows()
    try:
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
    except OSError as exc:
        raise HeadmapError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def short_summary(stats: HeadStats, top: int = 3) -> str:
    """``print(stats)``: model, tokens, layers x heads, the statistics, and the ``top`` most focused
    (lowest entropy) and most sink-like (highest ``first_share``) heads."""
    lines = [
        f"HeadStats(model={stats.model!r}, tokens={len(stats.tokens)}, "
        f"{len(stats.layers)} layers x {len(stats.heads)} heads)",
        f"  statistics: {', '.join(stats.statistics)}",
    ]
    for name, label, sign in (
        ("entropy", "most focused (lowest entropy)", 1.0),
        ("first_share", "strongest sinks (first_share)", -1.0),
    ):
        values = stats.stat(name).ravel()  # [layer * head]
        order = [i for i in np.argsort(sign * values, kind="stable") if np.isfinite(values[i])][:top]
        cells = ", ".join(
            f"{stats.layers[i // len(stats.heads)].name}/{stats.heads[i % len(stats.heads)]} "
            f"{format_number(values[i])}"
            for i in order
        )
        lines.append(f"  {label}: {cells or 'n/a'}")
    return "\n".join(lines)


def save_stats(stats: HeadStats, path: str | Path) -> Path:
    """Deprecated: ``stats.save(path)``."""
    warnings.warn(
        "save_stats(stats, path) is deprecated: use stats.save(path)", DeprecationWarning, stacklevel=2
    )
    return stats.save(path)
