"""Write a picture of a result to a file; the extension picks the format."""

from __future__ import annotations

import os
from pathlib import Path

from headmap.errors import HeadmapError
from headmap.result import AttentionResult, LayerKey

STATIC = (".png", ".svg", ".pdf")
EXTENSIONS = (*STATIC, ".html")


def check_writable(path: Path) -> None:
    """One clear line when ``path`` cannot be written, before any work is done."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise HeadmapError(f"cannot write {path}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise HeadmapError(f"cannot write {path}: permission denied")


def render_to_file(result: AttentionResult, path: str | Path, key: LayerKey, head: int | None, **options: object) -> Path:
    """One head (or, with ``head=None``, the grid of all captured heads) to PNG, SVG, PDF or HTML."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EXTENSIONS:
        raise HeadmapError(f"unknown output extension {suffix or '(none)'!r} for {path}: use one of {', '.join(EXTENSIONS)}")
    check_writable(path)
    if suffix == ".html":
        from headmap.render_html import grid_html, head_html

        page = grid_html(result, key, **options) if head is None else head_html(result, key, head, **options)  # type: ignore[arg-type]
        try:
            path.write_text(page, encoding="utf-8")
        except OSError as exc:
            raise HeadmapError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return path
    from headmap.render_static import plot_grid, plot_head

    fig = plot_grid(result, key, **options) if head is None else plot_head(result, key, head, **options)  # type: ignore[arg-type]
    try:
        fig.savefig(path, dpi=150 if suffix == ".png" else None, bbox_inches="tight")
    except OSError as exc:
        raise HeadmapError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path
