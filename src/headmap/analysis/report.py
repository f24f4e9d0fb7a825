"""Corpus reports: every head measured over many texts (``headmap.head_report`` / ``headmap heads``).

:func:`head_report` streams the corpus group by group (:mod:`headmap.analysis.compute`), keeps each
finished group on disk when given an output folder (:mod:`headmap.analysis.store`, so Ctrl-C loses
at most the group being computed and a rerun goes on from there), and combines the partials exactly
(:func:`headmap.analysis.partials.combine`) into a :class:`HeadReport`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from headmap.analysis.compute import DEFAULT_BUDGET_BYTES, check_diversity
from headmap.analysis.corpus import as_corpus
from headmap.analysis.diversity import linkage, mds_embedding, near_duplicates
from headmap.analysis.engines import Engine, LocalEngine
from headmap.analysis.losses import Loss, LossFn, resolve_loss
from headmap.analysis.partials import Combined, ReportSpec, combine, run_notes
from headmap.analysis.pictures import Picture, as_picture
from headmap.analysis.report_html import figure_png, report_fragment, report_page, write_report
from headmap.analysis.report_plots import (
    STAT_LABELS,
    plot_dendrogram,
    plot_layer_head,
    plot_mds,
    plot_profile,
    plot_roles,
)
from headmap.analysis.report_run import PARTIALS, parts_of, store_of
from headmap.analysis.roles import THRESHOLDS, assign_roles, describe_thresholds
from headmap.capture.discovery import discover
from headmap.capture.plan import LayerSpec, resolve_heads, resolve_layers
from headmap.capture.tap import CapturePath
from headmap.errors import HeadmapError
from headmap.models import LoadedModel, load
from headmap.render.report import Format, Report, check_writable, json_number
from headmap.render.report import show as show_report
from headmap.result import CAUSATION_WARNING, LayerKey

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class HeadReport(Report):
    """Per-head statistics of a model over a corpus; ``.table`` has one row per (layer, head).

    The report contract (:class:`~headmap.render.report.Report`): ``save`` writes ``.json``,
    ``.html``, one picture (``picture=Picture.ROLES``), ``.parquet`` (the table) and, for a path
    without extension, the folder of every file (CSV tables, pictures, ``report.html``).
    """

    combined: Combined
    notes: tuple[str, ...] = ()
    loss: str | None = None

    raw_formats: ClassVar[tuple[Format, ...]] = (Format.FOLDER,)
    tabular: ClassVar[bool] = True

    # -- tables ---------------------------------------------------------------------------------
    @property
    def spec(self) -> ReportSpec:
        return self.combined.spec

    @property
    def model(self) -> str:
        return self.spec.model

    @property
    def n_texts(self) -> int:
        return self.combined.n_texts

    @property
    def roles(self) -> np.ndarray:
        """``[layer, head]`` role names (see :mod:`headmap.analysis.roles`)."""
        return assign_roles(self.combined.mean, THRESHOLDS)

    @property
    def table(self) -> pd.DataFrame:
        """The same as :meth:`to_pandas`."""
        return self.to_pandas()

    def to_pandas(self) -> pd.DataFrame:
        """One row per (layer, head): counts, each statistic's corpus mean and its spread across texts
        (``<stat>_std``), importance when computed, and the role."""
        c, spec = self.combined, self.spec
        roles = self.roles
        records = []
        for li, layer in enumerate(spec.layers):
            for hi, head in enumerate(spec.heads):
                record: dict[str, object] = {
                    "layer": layer,
                    "head": head,
                    "n_texts": c.n_texts,
                    "n_rows": int(c.n_rows[li]),
                }
                record.update({name: float(c.mean[name][li, hi]) for name in spec.stats})
                record.update({f"{name}_std": float(c.std[name][li, hi]) for name in spec.stats})
                if c.importance is not None:
                    record["importance"] = float(c.importance[li, hi])
                    record["importance_norm"] = float(c.importance_norm[li, hi])  # type: ignore[index]  # set whenever importance is
                record["role"] = str(roles[li, hi])
                records.append(record)
        return pd.DataFrame(records)

    @property
    def distances(self) -> pd.DataFrame | None:
        """The ``[head, head]`` distance matrix labelled ``layer.i/head.j``, or None without diversity."""
        if self.combined.distances is None:
            return None
        labels = self.spec.head_labels()
        return pd.DataFrame(self.combined.distances, index=pd.Index(labels, name="head"), columns=labels)

    def near_duplicates(self, count: int = 10) -> pd.DataFrame:
        """The ``count`` closest pairs of distinct heads, closest first."""
        if self.combined.distances is None:
            raise HeadmapError("this report has no head distances: compute it with diversity on")
        pairs = near_duplicates(self.combined.distances, self.spec.head_labels(), count)
        return pd.DataFrame(pairs, columns=["head_a", "head_b", "distance"])

    # -- pictures -------------------------------------------------------------------------------
    def _corpus(self) -> str:
        return f"{self.n_texts} texts, {self.combined.n_tokens} tokens"

    def plot_stat(self, name: str, cmap: str = "viridis") -> Figure:
        """Layer x head heatmap of one statistic's corpus mean."""
        if name not in self.spec.stats:
            raise HeadmapError(f"unknown statistic {name!r}: choose from {', '.join(self.spec.stats)}")
        return plot_layer_head(
            self.combined.mean[name],
            self.spec.layers,
            self.spec.heads,
            self.model,
            f"{STAT_LABELS.get(name, name)} · mean over all query rows of {self._corpus()}",
            cmap,
        )

    def plot_profile(self) -> Figure:
        return plot_profile(self.combined.mean, self.spec.layers, self.model, self._corpus())

    def plot_roles(self) -> Figure:
        return plot_roles(
            self.roles,
            self.spec.layers,
            self.spec.heads,
            self.model,
            self._corpus(),
            ["thresholds: " + "; ".join(line.split(" (")[0] for line in describe_thresholds())],
        )

    def _layer_of(self) -> list[int]:
        return [li for li in range(len(self.spec.layers)) for _ in self.spec.heads]

    def plot_dendrogram(self) -> Figure:
        d = self._need_distances()
        return plot_dendrogram(
            linkage(d),
            self.spec.head_labels(),
            self._layer_of(),
            self.spec.layers,
            self.model,
            self._corpus(),
        )

    def plot_mds(self, pairs: int = 5) -> Figure:
        d = self._need_distances()
        labels = self.spec.head_labels()
        close = [(labels.index(a), labels.index(b)) for a, b, _ in near_duplicates(d, labels, pairs)]
        return plot_mds(
            mds_embedding(d), labels, self._layer_of(), self.spec.layers, self.model, self._corpus(), close
        )

    def plot_importance(self, normalized: bool = True) -> Figure:
        c = self.combined
        if c.importance is None:
            raise HeadmapError(
                "this report has no importance: compute it with importance=True (--importance)"
            )
        values = c.importance_norm if normalized else c.importance
        assert values is not None  # importance_norm exists whenever importance does
        what = "importance, l2-normalized per layer" if normalized else "importance |d loss / d gate|"
        return plot_layer_head(
            values,
            self.spec.layers,
            self.spec.heads,
            self.model,
            f"{what} · {self.loss} · mean over {c.importance_texts} texts",
            cmap="magma",
        )

    def _need_distances(self) -> np.ndarray:
        if self.combined.distances is None:
            raise HeadmapError("this report has no head distances: compute it with diversity on")
        if self.spec.n_heads < 2:
            raise HeadmapError("clustering needs at least two heads")
        return self.combined.distances

    def figures(self) -> dict[str, Figure]:
        """Every picture of the report by file stem (``stat_entropy``, ``profile``, ``roles``, ...)."""
        out = {f"stat_{name}": self.plot_stat(name) for name in self.spec.stats}
        out["profile"] = self.plot_profile()
        out["roles"] = self.plot_roles()
        if self.combined.distances is not None and self.spec.n_heads >= 2:
            out["dendrogram"] = self.plot_dendrogram()
            out["mds"] = self.plot_mds()
        if self.combined.importance is not None:
            out["importance"] = self.plot_importance()
        return out

    # -- output: the report contract --------------------------------------------------------------
    def figure(self, picture: Picture = Picture.PROFILE, **options: Any) -> Figure:
        """One picture of the report (a :class:`~headmap.analysis.pictures.Picture`)."""
        picture = as_picture(picture)
        if picture.stat is not None:
            return self.plot_stat(picture.stat, **options)
        drawers = {
            Picture.PROFILE: self.plot_profile,
            Picture.ROLES: self.plot_roles,
            Picture.DENDROGRAM: self.plot_dendrogram,
            Picture.MDS: self.plot_mds,
            Picture.IMPORTANCE: self.plot_importance,
        }
        return drawers[picture](**options)

    def to_dict(self) -> dict[str, Any]:
        """Model, corpus size, notes and the table's records (undefined numbers as None)."""
        records = [
            {k: json_number(v) if isinstance(v, float) else v for k, v in record.items()}
            for record in self.to_pandas().to_dict("records")
        ]
        distances = self.combined.distances
        return {
            "model": self.model,
            "texts": self.n_texts,
            "tokens": int(self.combined.n_tokens),
            "layers": list(self.spec.layers),
            "head_numbers": [int(h) for h in self.spec.heads],
            "statistics": list(self.spec.stats),
            "loss": self.loss,
            "notes": list(self.notes),
            "warning": CAUSATION_WARNING,
            "heads": [{k: int(v) if isinstance(v, np.integer) else v for k, v in r.items()} for r in records],
            "distances": None if distances is None else [[json_number(v) for v in row] for row in distances],
        }

    def page(self, picture: Picture | None = None, **options: Any) -> str:
        """The whole report as an HTML fragment (pictures embedded), or only ``picture``."""
        if picture is None:
            return report_fragment(self, {name: figure_png(fig) for name, fig in self.figures().items()})
        return report_fragment(self, {picture.value: figure_png(self.figure(picture, **options))}, brief=True)

    def _save_raw(self, path: Path, fmt: Format, **options: Any) -> None:
        write_report(self, path)

    def _title(self) -> str:
        return f"headmap head report: {self.model}"

    def to_html(self) -> str:
        """The self-contained report page (pictures embedded)."""
        return report_page(self, {name: figure_png(fig) for name, fig in self.figures().items()})

    def render(self, path: str | Path) -> Path:
        """Write the self-contained report page to ``path`` (``.html``)."""
        path = Path(path)
        if path.suffix.lower() != ".html":
            raise HeadmapError(
                f"a report renders to .html, not {path.suffix or '(none)'!r}; save(folder) writes every file"
            )
        check_writable(path)
        path.write_text(self.to_html(), encoding="utf-8")
        return path

    def show(self, picture: Picture | str = Picture.PROFILE, **options: Any) -> None:
        """Display one picture inline in a notebook, or in a window. The string form
        (``show("stat_entropy")``) is deprecated: use ``show(Picture.STAT_ENTROPY)``."""
        show_report(self, picture=as_picture(picture), **options)

    def __repr__(self) -> str:
        return f"HeadReport(model={self.model!r}, heads={self.spec.n_heads}, texts={self.n_texts})"


def head_report(
    model: LoadedModel | str,
    texts: Sequence[str] | str | Path,
    *,
    layers: LayerSpec | Sequence[LayerSpec] | None = None,
    heads: int | Sequence[int] | None = None,
    max_texts: int | None = None,
    batch_size: int = 8,
    diversity: bool = True,
    importance: bool = False,
    loss: str | LossFn | Loss | None = None,
    out: str | Path | None = None,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    engine: Engine | None = None,
    progress: bool = False,
) -> HeadReport:
    """Measure every head over ``texts`` (a list of strings, or a ``.txt``/``.jsonl`` file or folder).

    Statistics are streamed (no ``N x N`` map is kept beyond ``budget_bytes`` for the distances).
    ``diversity`` adds head distances, clustering and MDS; ``importance`` adds Michel et al.'s head
    importance with ``loss`` (see :func:`headmap.head_importance`). With ``out``, finished groups of
    texts are kept in ``out/partials`` as they complete, a rerun continues where the last one
    stopped (refusing partials of another corpus, model or setting; a user loss is known by its
    name only), and the report is saved into ``out`` at the end. ``engine`` runs the per-text work:
    in this process (:class:`~headmap.analysis.engines.LocalEngine`, the default) or on Ray workers
    (:class:`~headmap.analysis.ray_engine.RayEngine`); the table is the same either way.
    """
    loaded = load(model) if isinstance(model, str) else model
    corpus = as_corpus(texts, max_texts)
    arch = discover(loaded.model)
    keys: tuple[LayerKey, ...] = resolve_layers(arch, layers)
    picked = resolve_heads(arch, heads)
    chosen_loss = resolve_loss(loaded.model, loss) if importance else None  # fail before any work
    paths = sorted({arch.sites[k].path for k in keys} - {CapturePath.DISPATCH}, key=lambda p: p.value)
    notes: list[str] = [f"capture path: {p.value} ({p.describe()})" for p in paths]
    why_not = check_diversity(keys) if diversity else None
    if why_not:
        notes.append(why_not)
    spec = ReportSpec(loaded.name, tuple(k.name for k in keys), picked, diversity=diversity and not why_not)
    store = store_of(out, spec, chosen_loss)
    parts = parts_of(
        loaded, corpus, spec, store, batch_size, budget_bytes, chosen_loss, engine or LocalEngine(), progress
    )
    notes += [n for n in run_notes(parts) if n not in notes]
    report = HeadReport(combine(parts, spec), tuple(notes), chosen_loss.name if chosen_loss else None)
    if out is not None:
        report.save(out)
    return report


__all__ = ["PARTIALS", "HeadReport", "head_report"]
