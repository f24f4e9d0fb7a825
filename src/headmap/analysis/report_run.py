"""Running a head report: the partials kept on disk and the per-text work (``head_report``'s body)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from headmap.analysis.compute import plan_groups, token_counts
from headmap.analysis.corpus import CorpusText
from headmap.analysis.engines import IMPORTANCE_JOB, STATS_JOB, Engine, Job, Work
from headmap.analysis.losses import Loss
from headmap.analysis.partials import Partial, ReportSpec
from headmap.analysis.store import PartialStore, kept_indices
from headmap.capture import native
from headmap.errors import HeadmapError
from headmap.models import LoadedModel

#: The folder inside a report's output folder where finished groups of texts are kept.
PARTIALS = "partials"


def store_of(out: str | Path | None, spec: ReportSpec, loss: Loss | None) -> PartialStore | None:
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


def _bar(progress: bool, total: int, done: int, what: str) -> tqdm[Any] | None:
    if not progress:
        return None
    return tqdm(total=total, initial=done, desc=what, unit="text")


def parts_of(
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
        if next(loaded.model.parameters()).dtype == torch.float32:  # the kernel's one dtype
            native.prepare(sum(tokens))  # before the first group, so that every group takes one path
    return [Job(kind, tuple(todo[i] for i in g), tuple(tokens[i] for i in g)) for g in groups]


__all__ = ["PARTIALS", "parts_of", "store_of"]
