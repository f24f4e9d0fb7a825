"""The one exception type users see.

Every failure that a user can fix (bad text, unknown layer, corrupt file, unsupported model) is
raised as :class:`HeadmapError` with a message that names the fix; the CLI prints it on one line
and exits non-zero instead of showing a traceback from deep inside torch.
"""

from __future__ import annotations


class HeadmapError(ValueError):
    """A problem with the user's input or environment, with a message that says how to fix it."""


def check_index(value: int, size: int, what: str) -> int:
    """Return ``value`` as a non-negative index into ``size`` items, or raise naming the valid range.

    Negative values count from the end, as in Python.
    """
    if size <= 0:
        raise HeadmapError(f"there is no {what} to choose from")
    if not -size <= value < size:
        raise HeadmapError(f"{what} {value} is out of range: valid values are 0..{size - 1} (or -{size}..-1)")
    return value % size
