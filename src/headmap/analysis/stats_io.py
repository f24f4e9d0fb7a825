"""Writing per-head statistics tables: CSV, JSON or Parquet, chosen by the file extension."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from headmap.errors import HeadmapError
from headmap.render.report import COMMON, Format, check_writable

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


def save_stats(stats: HeadStats, path: str | Path) -> Path:
    """Deprecated: ``stats.save(path)``."""
    warnings.warn(
        "save_stats(stats, path) is deprecated: use stats.save(path)", DeprecationWarning, stacklevel=2
    )
    return stats.save(path)
