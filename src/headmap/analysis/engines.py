"""Where the per-text half of a corpus report runs: in this process, or on Ray workers.

A report is a list of *jobs* (a group of texts and the kind of partial wanted of it); an engine
turns jobs into :class:`~headmap.analysis.partials.Partial` objects, in any order. The driver keeps
finished partials (resumable) and combines them with the same pure function whichever engine made
them, so the table does not depend on the engine.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from headmap.analysis.compute import spec_keys, stats_partial
from headmap.analysis.corpus import CorpusText
from headmap.analysis.importance import importance_partial
from headmap.analysis.losses import Loss
from headmap.analysis.partials import Partial, ReportSpec
from headmap.models import LoadedModel

STATS_JOB, IMPORTANCE_JOB = "stats", "importance"


@dataclass(frozen=True)
class Job:
    """One unit of work: the partial of ``kind`` (``"stats"`` or ``"importance"``) of a group of texts."""

    kind: str
    texts: tuple[CorpusText, ...]
    tokens: tuple[int, ...]  # token count of each text (stats jobs group by it)


@dataclass(frozen=True)
class Work:
    """Everything a job needs besides its texts; the same for every job of a report."""

    spec: ReportSpec
    budget_bytes: int
    loss: Loss | None = None


def run_job(loaded: LoadedModel, job: Job, work: Work) -> Partial:
    """The partial of one job, computed here."""
    if job.kind == IMPORTANCE_JOB:
        assert work.loss is not None
        return importance_partial(loaded, job.texts, spec_keys(work.spec), work.spec.heads, work.loss)
    return stats_partial(loaded, job.texts, work.spec, job.tokens, work.budget_bytes)


class Engine(Protocol):
    """Turns jobs into partials; may yield them in any order, each job exactly once."""

    def partials(self, loaded: LoadedModel, jobs: Sequence[Job], work: Work) -> Iterator[Partial]:
        """Yield one partial per job."""


@dataclass(frozen=True)
class LocalEngine:
    """Every job in this process, one after another (the default)."""

    def partials(self, loaded: LoadedModel, jobs: Sequence[Job], work: Work) -> Iterator[Partial]:
        for job in jobs:
            yield run_job(loaded, job, work)
