"""Corpus reports on Ray Data: the per-text half on a pool of workers, each loading the model once.

Install with ``pip install '.[ray]'`` from a clone. Without an address Ray starts embedded on this machine
(the way to try it); with one it joins an existing cluster. Jobs go out as a Ray dataset and
``map_batches`` runs them on an actor pool (one model per worker); each worker returns its
partials as safetensors bytes (no pickles), and the driver decodes, keeps and combines them exactly
as the in-process path does. Ray restarts a worker that dies and retries its job; the driver takes
each job's partial once, so no text is lost or counted twice.

``HEADMAP_RAY_FAULT_ONCE=<file>`` in a worker's environment makes the first worker that finds the
file missing create it and die mid-job: the fault test's way of killing a worker exactly once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from headmap.analysis.corpus import CorpusText
from headmap.analysis.engines import Job, Work, run_job
from headmap.analysis.losses import resolve_loss
from headmap.analysis.partials import Partial, ReportSpec
from headmap.errors import HeadmapError
from headmap.models import BUNDLED, LoadedModel, load

FAULT_ONCE = "HEADMAP_RAY_FAULT_ONCE"


def _job_record(index: int, job: Job) -> dict[str, object]:
    texts = [{"index": t.index, "text": t.text, "origin": t.origin} for t in job.texts]
    return {
        "job": index,
        "kind": job.kind,
        "texts": json.dumps(texts),
        "tokens": json.dumps(list(job.tokens)),
    }


def _job_from(kind: str, texts: str, tokens: str) -> Job:
    parsed = [CorpusText(int(t["index"]), t["text"], t["origin"]) for t in json.loads(texts)]
    return Job(kind, tuple(parsed), tuple(int(n) for n in json.loads(tokens)))


class PartialWorker:
    """A Ray Data actor: loads the model once, then turns batches of job records into partials."""

    def __init__(
        self,
        source: str,
        spec: str,
        budget_bytes: int,
        loss: str | None,
        threads: int,
        trust_remote_code: bool,
        load_options: dict[str, Any] | None = None,
    ) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.loaded = load(source, trust_remote_code=trust_remote_code, **(load_options or {}))
        chosen = resolve_loss(self.loaded.model, loss) if loss is not None else None
        self.work = Work(ReportSpec.from_json(spec), budget_bytes, chosen)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from safetensors.numpy import save

        _maybe_fail()
        payloads, digests, notes = [], [], []
        for kind, texts, tokens in zip(batch["kind"], batch["texts"], batch["tokens"]):
            partial = run_job(self.loaded, _job_from(str(kind), str(texts), str(tokens)), self.work)
            payloads.append(save(partial.arrays()))
            digests.append(json.dumps(list(partial.digests)))
            notes.append(json.dumps(list(partial.notes)))
        return {
            "job": np.asarray(batch["job"]),
            "payload": np.array(payloads, dtype=object),
            "digests": np.array(digests, dtype=object),
            "notes": np.array(notes, dtype=object),
        }


def _maybe_fail() -> None:
    marker = os.environ.get(FAULT_ONCE)
    if marker and not Path(marker).exists():
        Path(marker).write_text("a worker died here once\n", encoding="utf-8")
        os._exit(1)  # noqa: SLF001 - a hard death, as a crashed or killed worker would die


def _model_source(loaded: LoadedModel) -> str:
    """What a worker passes to :func:`headmap.load`: a bundled name, a folder or a .gguf file."""
    if loaded.name in BUNDLED or Path(loaded.name).exists():
        return loaded.name
    raise HeadmapError(
        f"the Ray engine loads the model in every worker, but {loaded.name!r} is neither a bundled model nor a "
        "folder or .gguf file: save it with model.save_pretrained(folder) and tokenizer.save_pretrained(folder), "
        "then pass headmap.load(folder)"
    )


@dataclass(frozen=True)
class RayEngine:
    """Jobs on a Ray Data actor pool of ``workers`` workers, each with ``cpus_per_worker`` CPUs and
    ``gpus_per_worker`` GPUs. ``address`` joins a running cluster (``"auto"`` or ``"ray://host:port"``);
    without it Ray starts on this machine for the run and stops afterwards. ``runtime_env`` is
    handed to Ray (environment variables, packages for remote nodes). ``load_options`` go to each
    worker's :func:`headmap.load` (``dtype``, ``device``...); workers with GPUs load onto ``cuda``
    unless they say otherwise."""

    address: str | None = None
    workers: int = 2
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    trust_remote_code: bool = False
    runtime_env: dict[str, object] = field(default_factory=dict)
    load_options: dict[str, Any] = field(default_factory=dict)

    def worker_load_options(self) -> dict[str, Any]:
        """What each worker passes to :func:`headmap.load` besides the model: ``load_options``, and
        ``device="cuda"`` where the workers get GPUs and the options place the model nowhere."""
        options = dict(self.load_options)
        if self.gpus_per_worker > 0 and options.get("device") is None and options.get("device_map") is None:
            options["device"] = "cuda"
        return options

    def partials(self, loaded: LoadedModel, jobs: Sequence[Job], work: Work) -> Iterator[Partial]:
        if not jobs:
            return
        ray = _import_ray()
        if self.workers < 1:
            raise HeadmapError(f"--workers must be at least 1, not {self.workers}")
        if work.loss is not None and work.loss.name not in ("causal", "mlm"):
            raise HeadmapError(
                "the Ray engine ships losses by name: use the causal or mlm loss, or the local engine"
            )
        source = _model_source(loaded)
        started = self._connect(ray)
        try:
            yield from self._run(ray, source, jobs, work)
        finally:
            if started:
                ray.shutdown()

    def _connect(self, ray) -> bool:
        """Start or join Ray; True when this call started it (and so stops it afterwards)."""
        if ray.is_initialized():
            return False
        options: dict[str, object] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "configure_logging": False,
            "runtime_env": self.runtime_env or None,
        }
        if self.address:
            options["address"] = self.address
        else:
            options.update(
                num_cpus=max(1, int(self.workers * self.cpus_per_worker)), object_store_memory=256 * 2**20
            )
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise HeadmapError(
                f"cannot start or reach Ray ({exc}); check --address, or drop it to run Ray here"
            ) from exc
        return True

    def _run(self, ray, source: str, jobs: Sequence[Job], work: Work) -> Iterator[Partial]:
        from safetensors.numpy import load as load_arrays

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the driver shows its own bar over texts
        context.verbose_stats_logs = False
        records = ray.data.from_items([_job_record(i, job) for i, job in enumerate(jobs)])
        results = records.map_batches(
            PartialWorker,
            fn_constructor_args=(
                source,
                work.spec.to_json(),
                work.budget_bytes,
                work.loss.name if work.loss else None,
                max(1, int(self.cpus_per_worker)),
                self.trust_remote_code,
                self.worker_load_options(),
            ),
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=self.workers),
            num_cpus=self.cpus_per_worker,
            num_gpus=self.gpus_per_worker,
        )
        seen: set[int] = set()
        for row in results.iter_rows():
            job = int(row["job"])
            if job in seen:  # a retried job delivered twice: its texts count once
                continue
            seen.add(job)
            yield Partial.from_arrays(
                load_arrays(bytes(row["payload"])), json.loads(row["digests"]), json.loads(row["notes"])
            )
        missing = set(range(len(jobs))) - seen
        if missing:
            raise HeadmapError(
                f"Ray returned no result for {len(missing)} of {len(jobs)} groups of texts: run again "
                "(finished texts are kept)"
            )


def _import_ray():
    try:
        os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")  # no call home
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise HeadmapError(
            "the Ray engine needs Ray Data: pip install 'ray[data]' (or '.[ray]' from a clone)"
        ) from exc
    return ray
