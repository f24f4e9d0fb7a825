"""The pictures of a head report, as a type: ``report.show(Picture.ROLES)``, ``report.figure(...)``."""

from __future__ import annotations

import enum
import warnings

from headmap.errors import HeadmapError


class Picture(enum.Enum):
    """One picture of a :class:`~headmap.analysis.report.HeadReport`; the value is its file stem."""

    PROFILE = "profile"
    ROLES = "roles"
    DENDROGRAM = "dendrogram"
    MDS = "mds"
    IMPORTANCE = "importance"
    STAT_ENTROPY = "stat_entropy"
    STAT_ENTROPY_NORM = "stat_entropy_norm"
    STAT_DISTANCE = "stat_distance"
    STAT_FIRST_SHARE = "stat_first_share"
    STAT_SPECIAL_SHARE = "stat_special_share"
    STAT_CONFIDENCE = "stat_confidence"
    STAT_PREV_SHARE = "stat_prev_share"
    STAT_DIAG_SHARE = "stat_diag_share"
    STAT_NEXT_SHARE = "stat_next_share"

    @property
    def stat(self) -> str | None:
        """The statistic a ``STAT_*`` picture shows (``"entropy"``), else None."""
        return self.value[len("stat_") :] if self.value.startswith("stat_") else None

    @classmethod
    def for_stat(cls, name: str) -> Picture:
        """The picture of one statistic by its name."""
        return cls.parse(f"stat_{name}")

    @classmethod
    def parse(cls, name: str) -> Picture:
        """A picture by its file stem (``"stat_entropy"``); an unknown one is one clear error."""
        try:
            return cls(name)
        except ValueError:
            names = ", ".join(p.value for p in cls)
            raise HeadmapError(f"unknown picture {name!r}: choose Picture.<NAME>, one of {names}") from None


def as_picture(picture: Picture | str) -> Picture:
    """``picture`` as a :class:`Picture`; the string form still works for a release, with a warning."""
    if isinstance(picture, Picture):
        return picture
    warnings.warn(
        f"show({picture!r}) with a string is deprecated: use show(Picture.{Picture.parse(picture).name}) "
        "(from headmap.analysis import Picture)",
        DeprecationWarning,
        stacklevel=3,
    )
    return Picture.parse(picture)


__all__ = ["Picture", "as_picture"]
