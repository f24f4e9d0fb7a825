"""Write a picture of a result to a file; the extension picks the format.

``.png``, ``.svg`` and ``.pdf`` are drawn with matplotlib, ``.html`` with plotly (self-contained,
plotly.js embedded). Problems the user can fix (unknown extension, missing or read-only folder)
are reported as one :class:`HeadmapError` line before any drawing is done.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from headmap.errors import HeadmapError
from headmap.render.frames import (
    figure_grid,
    figure_head,
    is_time_layer,
    time_html,
)  # audio cross layers over time, images, matrices
from headmap.render.html import grid_html, head_html
from headmap.render.image_view import image_page
from headmap.render.interactive import interactive_page
from headmap.render.report import PICTURES, PNG_DPI, Format, check_writable, html_document, save_figure
from headmap.result import AttentionResult, LayerKey

#: What ``render_to_file`` writes: the pictures and ``.html`` of the report contract's one list.
STATIC = tuple(fmt.value for fmt in PICTURES)
EXTENSIONS = (*STATIC, Format.HTML.value)

__all__ = [
    "EXTENSIONS",
    "PNG_DPI",
    "STATIC",
    "check_extension",
    "check_writable",
    "render_to_file",
    "save_figure",
]


def check_extension(path: Path) -> str:
    """The lower-case extension of ``path`` if headmap can write it, else a one-line error."""
    suffix = path.suffix.lower()
    if suffix not in EXTENSIONS:
        raise HeadmapError(
            f"unknown output extension {suffix or '(none)'!r} for {path}: use one of {', '.join(EXTENSIONS)}"
        )
    return suffix


def render_to_file(
    result: AttentionResult, path: str | Path, key: LayerKey, head: int | None, **options: Any
) -> Path:
    """Draw one head (``head=None``: all captured heads of the layer as a grid) into ``path``.

    The extension picks the format: ``.png``/``.svg``/``.pdf`` via
    :func:`headmap.render.static.plot_head` / :func:`~headmap.render.static.plot_grid`, ``.html``
    via :func:`headmap.render.html.head_html` / :func:`~headmap.render.html.grid_html`. ``options``
    (``cmap``, ``max_tokens``, ``vmin``, ``vmax``) go to those functions; ``dpi`` is the raster
    resolution of static output (150 by default; HTML ignores it). ``interactive=True`` (``.html``
    only) writes :func:`headmap.render.interactive.interactive_page` instead: every captured layer
    and head with selectors, starting at ``key``/``head``. An image result is drawn over its image
    (:mod:`headmap.render.patches`; ``query``, ``rollout``; ``.html``: the interactive view of
    :mod:`headmap.render.image_view`), a cross layer of an audio result over time
    (:mod:`headmap.render.frames`); ``matrix=True`` draws the heatmaps instead. Returns ``path``.
    """
    path = Path(path)
    suffix = check_extension(path)
    check_writable(path)
    dpi = int(options.pop("dpi", PNG_DPI))
    interactive = bool(options.pop("interactive", False))
    if interactive and suffix != ".html":
        raise HeadmapError(f"interactive=True writes an HTML page: name the file .html, not {suffix}")
    if suffix == ".html":
        matrix = bool(options.pop("matrix", False))
        if is_time_layer(result, key) and not matrix:
            page = html_document(
                time_html(result, key, head, **options), f"headmap: {result.model} over time"
            )
        elif result.source.patches is not None and not matrix:
            # Over the image, interactive: hover a patch to look from it (a static picture without scripts).
            page = html_document(
                image_page(result, key, head, **options), f"headmap: {result.model} over the image"
            )
        elif interactive:
            page = interactive_page(result, key, head, **options)
        else:
            page = (
                grid_html(result, key, **options) if head is None else head_html(result, key, head, **options)
            )
        try:
            path.write_text(page, encoding="utf-8")
        except OSError as exc:
            raise HeadmapError(f"cannot write {path}: {exc.strerror or exc}") from None
        return path
    fig = figure_grid(result, key, **options) if head is None else figure_head(result, key, head, **options)
    try:
        save_figure(fig, path, suffix[1:], dpi=dpi)
    except OSError as exc:
        raise HeadmapError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
