""":class:`AuditRecord`: the JSON of one audited decision, and its HTML and multi-page PDF renderings.

The dict is the record; every picture and page is drawn from it alone, so a record read back from
``.json`` renders the same as the one just computed. ``.pdf`` is several pages (summary and
provenance, the explanation, the heads, the causal checks) through matplotlib's PdfPages; ``.png``
and ``.svg`` are the first page.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from headmap.apps.audit.html_page import fragment
from headmap.apps.audit.pages import pages
from headmap.attribution.explanation import Explanation
from headmap.errors import HeadmapError
from headmap.render.report import Report, check_writable, read_json, save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMAT = "headmap.audit/1"


@dataclass(frozen=True)
class AuditRecord(Report):
    """One decision's record: ``data`` holds settings, provenance, the numbers, summary and caveats."""

    data: dict[str, Any]

    @property
    def summary(self) -> list[str]:
        """The plain-language summary, one sentence a line."""
        return list(self.data["summary"])

    @property
    def caveats(self) -> list[str]:
        return list(self.data["caveats"])

    @property
    def explanation(self) -> Explanation:
        """The explanation inside the record, over words."""
        return Explanation.from_dict(self.data["explanation"]).to_words()

    @property
    def verifiable(self) -> bool:
        """Whether the record names model files that :func:`headmap.verify` can check."""
        return bool(self.data["provenance"].get("verifiable"))

    def to_dict(self) -> dict[str, Any]:
        return self.data

    def figures(self) -> list[Figure]:
        """Every page of the PDF, as matplotlib figures."""
        return pages(self.data, self.explanation)

    def figure(self, page: int = 0, **options: Any) -> Figure:
        """One page of the PDF (default the first: summary and provenance)."""
        figures = self.figures()
        if not 0 <= page < len(figures):
            raise HeadmapError(f"page {page} does not exist: the record has pages 0 to {len(figures) - 1}")
        import matplotlib.pyplot as plt

        for i, fig in enumerate(figures):
            if i != page:
                plt.close(fig)
        return figures[page]

    def page(self, **options: Any) -> str:
        return fragment(self.data)

    def _title(self) -> str:
        return f"headmap audit record · {self.data['settings']['model']}"

    def save(self, path: str | Path, **options: Any) -> Path:
        """Write the record; ``.pdf`` has every page, the other formats are those of every result."""
        path = Path(path)
        if path.suffix.lower() != ".pdf":
            return super().save(path, **options)
        check_writable(path)
        from matplotlib.backends.backend_pdf import PdfPages

        try:
            with PdfPages(path, metadata={"Title": self._title(), "Creator": "headmap audit"}) as pdf:
                for fig in self.figures():
                    save_figure(fig, pdf, "pdf")
        except OSError as exc:
            raise HeadmapError(f"cannot write {path}: {exc.strerror or exc}") from None
        return path

    @classmethod
    def load(cls, path: str | Path) -> AuditRecord:
        """Read a record written as ``.json``; one clear line when it is not one."""
        path = Path(path)
        data = read_json(path, "the audit record")
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise HeadmapError(
                f"{path} is not a headmap audit record (format {found!r}, expected {FORMAT!r})"
            )
        missing = [k for k in ("settings", "provenance", "decision", "explanation") if k not in data]
        if missing:
            raise HeadmapError(f"{path} is a corrupt audit record: it has no {', '.join(missing)}")
        return cls(data)

    def __repr__(self) -> str:
        s = self.data["settings"]
        return f"AuditRecord(model={s['model']!r}, output={self.data['decision']['output']:.6g}, methods={s['methods']})"


__all__ = ["FORMAT", "AuditRecord"]
