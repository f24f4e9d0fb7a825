"""Writing per-head statistics tables: CSV, JSON or Parquet, chosen by the file extension."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING

from headmap.errors import HeadmapError
from headmap.result import CAUSATION_WARNING

if TYPE_CHECKING:
    from headmap.analysis.stats import HeadStats

STATS_EXTENSIONS = (".csv", ".json", ".parquet")


def save_stats(stats: HeadStats, path: str | Path) -> Path:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in STATS_EXTENSIONS:
        raise HeadmapError(
            f"unknown table extension {suffix or '(none)'!r}: use one of {', '.join(STATS_EXTENSIONS)}"
        )
    if not path.parent.is_dir():
        raise HeadmapError(f"cannot write {path}: the folder {path.parent} does not exist")
    records = stats.rows()
    try:
        if suffix == ".csv":
            with path.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(records[0]))
                writer.writeheader()
                writer.writerows(records)
        elif suffix == ".json":
            payload = {
                "model": stats.model,
                "tokens": len(stats.tokens),
                "warning": CAUSATION_WARNING,
                "heads": records,
            }
            # NaN (undefined for cross-attention) is not JSON: write null instead.
            clean = [
                {k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in records
            ]
            payload["heads"] = clean
            path.write_text(json.dumps(payload, indent=1), encoding="utf-8")
        else:
            _write_parquet(records, path)
    except OSError as exc:
        raise HeadmapError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def _write_parquet(records: list[dict[str, object]], path: Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise HeadmapError(
            "writing .parquet needs pyarrow: pip install pyarrow, or write .csv/.json"
        ) from exc
    pq.write_table(pa.Table.from_pylist(records), str(path))
