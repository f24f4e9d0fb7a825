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
from typing import TYPE_CHECKING

import numpy as np

from headmap.analysis.compute import DEFAULT_BUDGET_BYTES, check_diversity, plan_groups, token_counts
from headmap.analysis.corpus import CorpusText, as_corpus
from headmap.analysis.diversity import linkage, mds_embedding, near_duplicates
from headmap.analysis.engines import IMPORTANCE_JOB, STATS_JOB, Engine, Job, LocalEngine, Work
from headmap.analysis.losses import Loss, LossFn, resolve_loss
from headmap.analysis.partials import Combined, Partial, ReportSpec, combine
from headmap.analysis.roles import THRESHOLDS, assign_roles, describe_thresholds
from headmap.analysis.store import PartialStore, kept_indices
from headmap.capture.discovery import discover
from headmap.capture.plan import LayerSpec, resolve_heads, resolve_layers
from headmap.capture.tap import CapturePath
from headmap.errors import HeadmapError
from headmap.models import LoadedModel, load
from headmap.result import CAUSATION_WARNING, LayerKey

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

PARTIALS = "partials"


@dataclass(frozen=True)
class HeadReport:
    """Per-head statistics of a model over a corpus; ``.table`` has one row per (layer, head)."""

    combined: Combined
    notes: tuple[str, ...] = ()
    loss: str | None = None

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
        """One row per (layer, head): counts, each statistic's corpus mean and its spread across texts
        (``<stat>_std``), importance when computed, and the role."""
        import pandas as pd

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
                    record["importance_norm"] = float(c.importance_norm[li, hi])  # type: ignore[index]
                record["role"] = str(roles[li, hi])
                records.append(record)
        return pd.DataFrame(records)

    @property
    def distances(self) -> pd.DataFrame | None:
        """The ``[head, head]`` distance matrix labelled ``layer.i/head.j``, or None without diversity."""
        import pandas as pd

        if self.combined.distances is None:
            return None
        labels = self.spec.head_labels()
        return pd.DataFrame(self.combined.distances, index=pd.Index(labels, name="head"), columns=labels)

    def near_duplicates(self, count: int = 10) -> pd.DataFrame:
        """The ``count`` closest pairs of distinct heads, closest first."""
        import pandas as pd

        if self.combined.distances is None:
            raise HeadmapError("this report has no head distances: compute it with diversity on")
        pairs = near_duplicates(self.combined.distances, self.spec.head_labels(), count)
        return pd.DataFrame(pairs, columns=["head_a", "head_b", "distance"])

    # -- pictures -------------------------------------------------------------------------------
    def _corpus(self) -> str:
        return f"{self.n_texts} texts, {self.combined.n_tokens} tokens"

    def plot_stat(self, name: str, cmap: str = "viridis") -> Figure:
        """Layer x head heatmap of one statistic's corpus mean."""
        from headmap.analysis.report_plots import STAT_LABELS, plot_layer_head

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
        from headmap.analysis.report_plots import plot_profile

        return plot_profile(self.combined.mean, self.spec.layers, self.model, self._corpus())

    def plot_roles(self) -> Figure:
        from headmap.analysis.report_plots import plot_roles

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
        from headmap.analysis.report_plots import plot_dendrogram

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
        from headmap.analysis.report_plots import plot_mds

        d = self._need_distances()
        labels = self.spec.head_labels()
        close = [(labels.index(a), labels.index(b)) for a, b, _ in near_duplicates(d, labels, pairs)]
        return plot_mds(
            mds_embedding(d), labels, self._layer_of(), self.spec.layers, self.model, self._corpus(), close
        )

    def plot_importance(self, normalized: bool = True) -> Figure:
        from headmap.analysis.report_plots import plot_layer_head

        c = self.combined
        if c.importance is None:
            raise HeadmapError(
                "this report has no importance: compute it with importance=True (--importance)"
            )
        values = c.importance_norm if normalized else c.importance
        what = "importance, l2-normalized per layer" if normalized else "importance |d loss / d gate|"
        return plot_layer_head(
            values,
            self.spec.layers,
            self.spec.heads,
            self.model,  # type: ignore[arg-type]
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

    # -- output ---------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``heads.csv``, ``heads.parquet``, ``distances.csv``, ``near_duplicates.csv``, the
        pictures (PNG) and ``report.html`` into ``folder`` (created if missing)."""
        from headmap.analysis.report_html import write_report

        return write_report(self, Path(folder))

    def to_html(self) -> str:
        """The self-contained report page (pictures embedded)."""
        from headmap.analysis.report_html import figure_png, report_page

        return report_page(self, {name: figure_png(fig) for name, fig in self.figures().items()})

    def render(self, path: str | Path) -> Path:
        """Write the self-contained report page to ``path`` (``.html``)."""
        path = Path(path)
        if path.suffix.lower() != ".html":
            raise HeadmapError(
                f"a report renders to .html, not {path.suffix or '(none)'!r}; save(folder) writes every file"
            )
        if not path.parent.is_dir():
            raise HeadmapError(f"cannot write {path}: the folder {path.parent} does not exist")
        path.write_text(self.to_html(), encoding="utf-8")
        return path

    def show(self, picture: str = "profile") -> None:
        """Display one picture (``profile``, ``roles``, ``dendrogram``, ``mds``, ``importance`` or
        ``stat_<name>``) inline in a notebook, or in a window."""
        import matplotlib.pyplot as plt

        if picture.startswith("stat_"):
            self.plot_stat(picture[len("stat_") :])
        elif picture in ("profile", "roles", "dendrogram", "mds", "importance"):
            getattr(self, f"plot_{picture}")()
        else:
            raise HeadmapError(
                f"unknown picture {picture!r}: profile, roles, dendrogram, mds, importance or stat_<name>"
            )
        plt.show()

    def _repr_html_(self) -> str:
        import html

        head = self.table.head(20).to_html(index=False, float_format=lambda v: f"{v:.3f}")
        return (
            f"<p>{html.escape(self.model)}: {self.spec.n_heads} heads over {html.escape(self._corpus())} "
            f"(first 20 rows)</p>{head}<p><em>{html.escape(CAUSATION_WARNING)}</em></p>"
        )

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
    store = _store(out, spec, chosen_loss)
    parts = _parts(
        loaded, corpus, spec, store, batch_size, budget_bytes, chosen_loss, engine or LocalEngine(), progress
    )
    report = HeadReport(combine(parts, spec), tuple(notes), chosen_loss.name if chosen_loss else None)
    if out is not None:
        report.save(out)
    return report


def _store(out: str | Path | None, spec: ReportSpec, loss: Loss | None) -> PartialStore | None:
    if out is None:
        return None
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise HeadmapError(f"cannot write the report into {folder}: it is a file, not a folder")
    if not folder.parent.is_dir():
        raise HeadmapError(
            f"cannot write the report into {folder}: the folder {folder.parent} does not exist"
        )
    return PartialStore(folder / PARTIALS, spec, loss.name if loss else None)


def _bar(progress: bool, total: int, done: int, what: str):  # type: ignore[no-untyped-def]
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc=what, unit="text")


def _parts(
    loaded: LoadedModel,
    corpus: list[CorpusText],
    spec: ReportSpec,
    store: PartialStore | None,
    batch_size: int,
    budget_bytes: int,
    loss: Loss | None,
    engine: Engine,
    progress: bool,
) -> list[Partial]:
    """Every partial of the report: kept ones from ``store``, the rest from ``engine`` (kept as they come)."""
    work = Work(spec, budget_bytes, loss)
    parts: list[Partial] = []
    kinds = [STATS_JOB] + ([IMPORTANCE_JOB] if loss is not None else [])
    for kind in kinds:
        kept = store.load(kind, corpus) if store is not None else []
        done = kept_indices(kept)
        todo = [t for t in corpus if t.index not in done]
        jobs = _jobs(kind, loaded, todo, spec, batch_size, budget_bytes)
        parts += kept
        bar = _bar(progress, len(corpus), len(done), "texts" if kind == STATS_JOB else "importance")
        try:
            for partial in engine.partials(loaded, jobs, work):
                if store is not None:
                    store.write(partial)
                parts.append(partial)
                if bar is not None:
                    bar.update(len(partial.indices))
        finally:
            if bar is not None:
                bar.close()
    return parts


def _jobs(
    kind: str,
    loaded: LoadedModel,
    todo: list[CorpusText],
    spec: ReportSpec,
    batch_size: int,
    budget_bytes: int,
) -> list[Job]:
    """Groups of texts per forward: stats jobs bounded by ``batch_size`` and the distance budget."""
    tokens = token_counts(loaded, todo)
    if kind == IMPORTANCE_JOB:
        step = max(1, batch_size)
        groups = [list(range(a, min(len(todo), a + step))) for a in range(0, len(todo), step)]
    else:
        groups = plan_groups(todo, tokens, spec, batch_size, budget_bytes)
    return [Job(kind, tuple(todo[i] for i in g), tuple(tokens[i] for i in g)) for g in groups]


__all__ = ["HeadReport", "head_report"]
