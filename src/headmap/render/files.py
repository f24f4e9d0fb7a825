"""Write a picture of a result to a file; the extension picks the format.

``.png``, ``.svg`` and ``.pdf`` are drawn with matplotlib, ``.html`` with plotly (self-contained,
plotly.js embedded). Problems the user can fix (unknown extension, missing or read-only folder)
are reported as one :class:`HeadmapError` line before any drawing is done.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import IO, TYPE_CHECKING

from headmap.errors import HeadmapError
from headmap.result import AttentionResult, LayerKey

if TYPE_CHECKING:
    from matplotlib.figure import Figure

STATIC = (".png", ".svg", ".pdf")
EXTENSIONS = (*STATIC, ".html")
PNG_DPI = 150


def check_extension(path: Path) -> str:
    """The lower-case extension of ``path`` if headmap can write it, else a one-line error."""
    suffix = path.suffix.lower()
    if suffix not in EXTENSIONS:
        raise HeadmapError(
            f"unknown output extension {suffix or '(none)'!r} for {path}: use one of {', '.join(EXTENSIONS)}"
        )
    return suffix


def check_writable(path: Path) -> None:
    """One clear line when ``path`` cannot be written, before any work is done."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise HeadmapError(f"cannot write {path}: the folder {parent} does not exist")
    if path.is_dir():
        raise HeadmapError(f"cannot write {path}: it is a folder")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise HeadmapError(f"cannot write {path}: permission denied")


def save_figure(
    fig: Figure, target: str | Path | IO[bytes], fmt: str | None = None, dpi: int = PNG_DPI
) -> None:
    """Save and close ``fig`` (pyplot keeps every figure alive until closed).

    Warnings about glyphs missing from the font (CJK or emoji tokens) are silenced: the text is
    still written, and a warning per missing glyph would bury the user's own output.
    """
    import matplotlib.pyplot as plt

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Glyph .* missing from font", category=UserWarning)
            warnings.filterwarnings(
                "ignore", message=r"Matplotlib currently does not support", category=UserWarning
            )
            # No bbox_inches="tight": the constrained layout already fits every label and the caption,
            # and "tight" would draw the figure twice (a third of the time for a long map).
            fig.savefig(target, format=fmt, dpi=dpi)
    finally:
        plt.close(fig)


def render_to_file(
    result: AttentionResult, path: str | Path, key: LayerKey, head: int | None, **options: object
) -> Path:
    """Draw one head (``head=None``: all captured heads of the layer as a grid) into ``path``.

    The extension picks the format: ``.png``/``.svg``/``.pdf`` via
    :func:`headmap.render.static.plot_head` / :func:`~headmap.render.static.plot_grid`, ``.html``
    via :func:`headmap.render.html.head_html` / :func:`~headmap.render.html.grid_html`. ``options``
    (``cmap``, ``max_tokens``, ``vmin``, ``vmax``) go to those functions; ``dpi`` is the raster
    resolution of static output (150 by default; HTML ignores it). ``interactive=True`` (``.html``
    only) writes :func:`headmap.render.interactive.interactive_page` instead: every captured layer
    and head with selectors, starting at ``key``/``head``. Returns ``path``.
    """
    path = Path(path)
    suffix = check_extension(path)
    check_writable(path)
    dpi = int(options.pop("dpi", PNG_DPI))  # type: ignore[call-overload]
    interactive = bool(options.pop("interactive", False))
    if interactive and suffix != ".html":
        raise HeadmapError(f"interactive=True writes an HTML page: name the file .html, not {suffix}")
    if suffix == ".html":
        from headmap.render.html import grid_html, head_html
        from headmap.render.interactive import interactive_page

        if interactive:
            page = interactive_page(result, key, head, **options)
        else:
            page = (
                grid_html(result, key, **options) if head is None else head_html(result, key, head, **options)
            )  # type: ignore[arg-type]
        try:
            path.write_text(page, encoding="utf-8")
        except OSError as exc:
            raise HeadmapError(f"cannot write {path}: {exc.strerror or exc}") from None
        return path
    from headmap.render.static import plot_grid, plot_head

    fig = plot_grid(result, key, **options) if head is None else plot_head(result, key, head, **options)  # type: ignore[arg-type]
    try:
        save_figure(fig, path, suffix[1:], dpi=dpi)
    except OSError as exc:
        raise HeadmapError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
