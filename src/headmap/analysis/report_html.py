"""Writing a corpus report: tables (CSV, Parquet), pictures (PNG) and one self-contained HTML page.

The page embeds its pictures as data URIs and has no script at all, so it opens offline and
nothing in it can run; every string that reaches it (model name, labels, notes) is escaped.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import TYPE_CHECKING

from headmap.analysis.report_plots import STAT_LABELS
from headmap.analysis.roles import describe_thresholds
from headmap.errors import HeadmapError
from headmap.render.profile import DEPTH_NOTE
from headmap.render.report import format_number, html_document, save_figure
from headmap.result import CAUSATION_WARNING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from headmap.analysis.report import HeadReport

TITLES = {
    "profile": "Layer-depth profile",
    "roles": "Roles",
    "dendrogram": "Head clustering (dendrogram)",
    "mds": "Head map (MDS)",
    "importance": "Head importance",
}
_STYLE = (  # scoped to the report's own element: a notebook's page keeps its own look
    ".hm-report{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    ".hm-report img{max-width:100%;border:1px solid #ddd}.hm-report table{border-collapse:collapse;font-size:12px}"
    ".hm-report td,.hm-report th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
    ".hm-report th{background:#f3f3f3}.hm-report .warn{background:#fff4e0;border-left:4px solid #e69500;"
    "padding:.6em 1em}.hm-report details{margin:1em 0}.hm-report summary{cursor:pointer;font-weight:600}"
)


def figure_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    save_figure(fig, buffer, fmt="png")
    return buffer.getvalue()


def figure_img(fig: Figure, alt: str) -> str:
    """``fig`` as an ``<img>`` with the PNG inline (``alt`` is escaped); the figure is closed."""
    data = base64.b64encode(figure_png(fig)).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}" style="max-width:100%">'


def _title(stem: str) -> str:
    if stem.startswith("stat_"):
        name = stem[len("stat_") :]
        return f"{name}: {STAT_LABELS.get(name, name)}"
    return TITLES.get(stem, stem)


def _image(stem: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f"<figure><figcaption><b>{html.escape(_title(stem))}</b></figcaption>"
        f'<img alt="{html.escape(_title(stem))}" src="data:image/png;base64,{data}"></figure>'
    )


def report_page(report: HeadReport, pngs: dict[str, bytes]) -> str:
    """The report as one HTML document."""
    return html_document(report_fragment(report, pngs), f"headmap head report: {report.spec.model}")


def report_fragment(report: HeadReport, pngs: dict[str, bytes], brief: bool = False) -> str:
    """The report as a self-contained HTML fragment with the pictures ``pngs`` (by file stem).

    ``brief``: only the heading, the caveats and the pictures (one picture shown in a notebook).
    """
    spec, c = report.spec, report.combined
    esc = html.escape
    parts = [
        f"<div class='hm-report'><style>{_STYLE}</style>",
        f"<h1>Head report: {esc(spec.model)}</h1>",
        f"<p>{spec.n_heads} heads ({len(spec.layers)} layers x {len(spec.heads)} heads) over {c.n_texts} texts "
        f"and {c.n_tokens} tokens. Every statistic is a mean over all query rows of all texts (each row "
        "counts once); <code>_std</code> columns are the standard deviation across texts of each text's mean.</p>",
        f"<p class='warn'><b>Caveats.</b> {esc(CAUSATION_WARNING)} {esc(DEPTH_NOTE)} Roles summarise where a "
        "head looks on average over this corpus, not what it computes.</p>",
    ]
    parts += [f"<p>{esc(note)}</p>" for note in report.notes]
    if brief:
        parts += [_image(stem, png) for stem, png in pngs.items()]
        return "\n".join([*parts, "</div>"])
    parts.append(
        "<h2>Role thresholds</h2><p>Fixed for every model; a head takes the first role it passes, in "
        "this order.</p><ul>" + "".join(f"<li>{esc(line)}</li>" for line in describe_thresholds()) + "</ul>"
    )
    counts = report.table["role"].value_counts()
    parts.append("<p>" + ", ".join(f"{esc(str(role))}: {int(n)}" for role, n in counts.items()) + "</p>")
    overview = [s for s in ("roles", "profile", "importance") if s in pngs]
    parts += [_image(s, pngs[s]) for s in overview]
    parts.append("<h2>Statistics per layer and head</h2>")
    parts += [_image(s, png) for s, png in pngs.items() if s.startswith("stat_")]
    if c.distances is not None:
        parts.append(
            "<h2>Diversity</h2><p>Distance between two heads: for each text the sum over its query "
            "tokens of the Jensen-Shannon divergence (natural log) between the two heads' rows, "
            "averaged over texts (Clark et al. 2019). 0 means identical maps.</p>"
        )
        parts += [_image(s, pngs[s]) for s in ("dendrogram", "mds") if s in pngs]
        parts.append("<h3>Closest pairs of heads</h3>")
        parts.append(report.near_duplicates(10).to_html(index=False, float_format=format_number))
    parts.append("<details><summary>Full table</summary>")
    parts.append(report.table.to_html(index=False, float_format=format_number, na_rep=""))
    parts.append("</details>")
    if report.loss:
        parts.append(
            f"<p>Importance loss: {esc(report.loss)} (Michel et al. 2019: mean over texts of "
            "|d loss / d gate| of a gate on each head's output).</p>"
        )
    parts.append(f"<p><em>{esc(CAUSATION_WARNING)}</em></p></div>")
    return "\n".join(parts)


def write_report(report: HeadReport, folder: Path) -> Path:
    """Every file of the report into ``folder``; returns the HTML page's path."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        table = report.table
        table.to_csv(folder / "heads.csv", index=False)
        _parquet(table, folder / "heads.parquet")
        distances = report.distances
        if distances is not None:
            distances.to_csv(folder / "distances.csv")
            report.near_duplicates(20).to_csv(folder / "near_duplicates.csv", index=False)
        pngs = {}
        for stem, fig in report.figures().items():
            pngs[stem] = figure_png(fig)
            (folder / f"{stem}.png").write_bytes(pngs[stem])
        page = folder / "report.html"
        page.write_text(report_page(report, pngs), encoding="utf-8")
    except OSError as exc:
        raise HeadmapError(f"cannot write the report into {folder}: {exc.strerror or exc}") from None
    return page


def _parquet(table, path: Path) -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise HeadmapError("writing heads.parquet needs pyarrow: pip install pyarrow") from exc
    table.to_parquet(path, index=False)


__all__ = ["figure_img", "figure_png", "report_fragment", "report_page", "write_report"]
