"""Writing an application's report (RAG, bias, pruning): the formats, and their errors, in one place."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from headmap.errors import HeadmapError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPORT_EXTENSIONS = (".html", ".png", ".svg", ".pdf", ".json")


def only_json(path: str | Path) -> Path:
    """``path`` if it names a ``.json`` file (what ``save`` writes), else a clear error."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise HeadmapError(
            f"save writes JSON: give a .json path, not {path.name} (render() draws .html/.png)"
        )
    return path


def write_report(
    path: str | Path,
    to_dict: Callable[[], dict[str, Any]],
    page: Callable[[], str],
    figure: Callable[[], Figure],
) -> Path:
    """Write a report as ``.json`` (``to_dict``, strict JSON), ``.html`` (``page``, one self-contained
    page) or ``.png``/``.svg``/``.pdf`` (``figure``, matplotlib); any other name or an unwritable
    place is a :class:`HeadmapError` naming the fix."""
    from headmap.render.files import check_writable, save_figure

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in REPORT_EXTENSIONS:
        raise HeadmapError(
            f"unknown report extension {suffix or '(none)'!r} for {path}: "
            f"use one of {', '.join(REPORT_EXTENSIONS)}"
        )
    check_writable(path)
    try:
        if suffix == ".json":
            path.write_text(
                json.dumps(to_dict(), indent=1, ensure_ascii=False, allow_nan=False), encoding="utf-8"
            )
        elif suffix == ".html":
            path.write_text(page(), encoding="utf-8")
        else:
            save_figure(figure(), path, suffix[1:])
    except OSError as exc:
        raise HeadmapError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
