"""One contract for every result type: the same ``save``, ``show`` and notebook display.

A result implements three producers and inherits everything else:

- ``to_dict()``: a JSON-safe dict (no NaN: undefined numbers are ``None``, see :func:`json_number`),
- ``figure(**options)``: a matplotlib figure,
- ``page(**options)``: a self-contained HTML fragment (inline styles, no script from a network),

and, where it has them, ``to_pandas()`` (a table: ``.parquet`` then works too) and raw data
(``_save_raw`` for ``.safetensors`` or a folder, declared in ``raw_formats``). ``save(path)``
picks the format from the extension, one writer for all: ``.json``, ``.html`` (the fragment in a
full document), ``.png``/``.svg``/``.pdf``, and the raw formats. Problems the user can fix
(unknown extension, unwritable place) are one :class:`HeadmapError` line before any work.

Result types of the core stage (:class:`headmap.result.AttentionResult`) cannot inherit from a
render-stage class; they implement the same methods and are registered as virtual subclasses, so
``isinstance(x, Report)`` holds for every result.
"""

from __future__ import annotations

import abc
import enum
import html
import json
import math
import os
import warnings
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar

import numpy as np

from headmap.errors import HeadmapError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


class Format(enum.Enum):
    """What ``save`` can write; the value is the file extension (``FOLDER``: a path without one)."""

    JSON = ".json"
    HTML = ".html"
    PNG = ".png"
    SVG = ".svg"
    PDF = ".pdf"
    PARQUET = ".parquet"
    SAFETENSORS = ".safetensors"
    FOLDER = ""

    @classmethod
    def of(cls, path: Path) -> Format | None:
        """The format ``path`` names by its extension (lower-cased), or None if headmap has none."""
        suffix = path.suffix.lower()
        for fmt in cls:
            if fmt.value == suffix:
                return fmt
        return None

    @property
    def picture(self) -> bool:
        return self in PICTURES


#: Raster resolution of PNG output unless a caller asks for another.
PNG_DPI = 150
#: The formats every result writes (a picture, a page and its numbers).
PICTURES = (Format.PNG, Format.SVG, Format.PDF)
COMMON = (Format.JSON, Format.HTML, *PICTURES)


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


def read_json(path: Path, what: str) -> Any:
    """The JSON value in ``path``; one line naming ``what`` (``"explanation"``) when it cannot be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HeadmapError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HeadmapError(f"cannot read {what} {path}: {exc}") from None


def json_number(value: float | np.floating[Any] | int) -> float | None:
    """A JSON number, or None where the value is undefined (NaN or infinite)."""
    value = float(value)
    return value if math.isfinite(value) else None


def json_numbers(values: np.ndarray[Any, Any] | list[float]) -> list[float | None]:
    """Every value of ``values`` (flattened) as :func:`json_number`."""
    return [json_number(v) for v in np.asarray(values, dtype=float).ravel()]


def format_number(value: object, digits: int = 3, signed: bool = False) -> str:
    """The one way a number is printed in text, tables and pages: ``n/a`` where undefined.

    ``digits`` significant digits (``%g``); ``signed=True`` always shows the sign. Non-numbers are
    returned as ``str(value)`` (escape them for HTML yourself).
    """
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return f"{int(value):+d}" if signed else str(int(value))
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            return "n/a"
        return f"{float(value):+.{digits}g}" if signed else f"{float(value):.{digits}g}"
    return str(value)


def html_document(fragment: str, title: str) -> str:
    """A full, self-contained HTML document around a result's fragment (``title`` is escaped)."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>\n<body>\n{fragment}\n</body></html>\n"
    )


class Report(abc.ABC):
    """The contract every headmap result implements (see the module docstring)."""

    #: Raw-data formats this type writes with ``_save_raw`` (``.safetensors``, a folder).
    raw_formats: ClassVar[tuple[Format, ...]] = ()
    #: Whether ``to_pandas`` gives a table (then ``.parquet`` is written too).
    tabular: ClassVar[bool] = False

    @abc.abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """Everything the result holds that a reader needs, JSON-safe."""

    @abc.abstractmethod
    def figure(self, **options: Any) -> Figure:
        """The result's picture, as a matplotlib figure."""

    @abc.abstractmethod
    def page(self, **options: Any) -> str:
        """The result as a self-contained HTML fragment."""

    def to_pandas(self) -> pd.DataFrame:
        """The result as a table (one row per head, text, step...: see each type)."""
        raise HeadmapError(f"{type(self).__name__} has no table: use to_dict(), or save it as .json")

    def formats(self) -> tuple[Format, ...]:
        """Every format ``save`` writes for this result."""
        return (*COMMON, *((Format.PARQUET,) if self.tabular else ()), *self.raw_formats)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A type that claims raw formats writes them with its own _save_raw(path, fmt, **options):
        # checked once, when the class is made, instead of failing at the first save.
        super().__init_subclass__(**kwargs)
        if cls.raw_formats and "_save_raw" not in vars(cls):
            raise TypeError(f"{cls.__name__} declares raw formats {cls.raw_formats} without _save_raw")

    def _title(self) -> str:
        return f"headmap: {type(self).__name__}"

    def save(self, path: str | Path, **options: Any) -> Path:
        """Write the result; the extension picks the format (see :meth:`formats`). Returns ``path``.

        ``options`` go to the producer of that format (``figure``, ``page`` or the raw writer).
        """
        return write(self, path, **options)

    def show(self, **options: Any) -> None:
        """Display the result: its page in a notebook, its figure in a window elsewhere."""
        show(self, **options)

    def _repr_html_(self) -> str:
        return self.page()


def write(report: Any, path: str | Path, **options: Any) -> Path:
    """The one writer behind every result's ``save`` (also used by registered virtual subclasses)."""
    path = Path(path)
    fmt = Format.of(path)
    allowed = report.formats()
    if fmt is None or fmt not in allowed:
        names = ", ".join(f.value or "a folder (no extension)" for f in allowed)
        raise HeadmapError(
            f"{type(report).__name__} cannot be saved as {path.suffix or 'a folder'} ({path}): use {names}"
        )
    if fmt is not Format.FOLDER:
        check_writable(path)
    try:
        if fmt is Format.JSON:
            text = json.dumps(report.to_dict(), indent=1, ensure_ascii=False, allow_nan=False)
            path.write_text(text, encoding="utf-8")
        elif fmt is Format.HTML:
            path.write_text(html_document(report.page(**options), report._title()), encoding="utf-8")
        elif fmt.picture:
            save_figure(report.figure(**options), path, fmt.value[1:])
        elif fmt is Format.PARQUET:
            report.to_pandas().to_parquet(path)
        else:
            report._save_raw(path, fmt, **options)
    except OSError as exc:
        raise HeadmapError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def show(report: Any, **options: Any) -> None:
    """Display ``report``: rich HTML in IPython, else the figure through pyplot."""
    try:
        from IPython import get_ipython  # optional: only a notebook has it
        from IPython.display import HTML, display
    except ImportError:
        get_ipython = None
    shell = get_ipython() if get_ipython is not None else None
    if shell is not None and type(shell).__name__ == "ZMQInteractiveShell":
        display(HTML(report.page(**options)))
        return
    import matplotlib.pyplot as plt  # pyplot picks a GUI backend on import: only when showing

    report.figure(**options)
    plt.show()


def deprecated_alias(new: str, old: str) -> Any:
    """A method ``old`` that warns (DeprecationWarning) and calls ``new``: an old name kept one release.

    In a class body: ``render = deprecated_alias("save", "render")``.
    """

    def alias(self: Any, *args: Any, **kwargs: Any) -> Any:
        warnings.warn(
            f"{type(self).__name__}.{old}() is deprecated: use {new}()", DeprecationWarning, stacklevel=2
        )
        return getattr(self, new)(*args, **kwargs)

    alias.__name__ = old
    alias.__doc__ = f"Deprecated alias of :meth:`{new}` (kept one release)."
    return alias
