"""Watching heads while a model trains: per-head statistics on fixed probe texts every N steps.

:func:`record_heads` (for a custom loop) and :class:`HeadMonitor` (a ``transformers.TrainerCallback``)
measure the model on the probe texts exactly as :func:`headmap.head_report` would (the same
streamed statistics, combined the same way, so step 0 equals the report of the initial model) and
append one row per (layer, head) to a long-format file: ``step, layer, head, <stat>...`` as
``.csv`` or ``.parquet``. The statistics are streamed under ``torch.inference_mode`` with the
model's own kernels; the model runs them in eval mode (no dropout) and gets back each module's mode,
and no parameter's gradient is touched, so the training step around it is unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch

from headmap.analysis.compute import plan_groups, stats_partial, token_counts
from headmap.analysis.corpus import corpus_from_texts
from headmap.analysis.gating import eval_mode
from headmap.analysis.partials import ReportSpec, combine
from headmap.capture import native
from headmap.capture.discovery import discover
from headmap.capture.plan import LayerSpec, resolve_heads, resolve_layers
from headmap.errors import HeadmapError
from headmap.models import LoadedModel

if TYPE_CHECKING:
    import pandas as pd
    from transformers import PreTrainedModel

MONITOR_EXTENSIONS = (".csv", ".parquet")
KEY_COLUMNS = ("step", "layer", "head")


def probe_frame(
    model: LoadedModel,
    probes: Sequence[str],
    step: int,
    layers: LayerSpec | Sequence[LayerSpec] | None = None,
    heads: int | Sequence[int] | None = None,
    batch_size: int = 8,
) -> pd.DataFrame:
    """``step, layer, head, <stat>...``: corpus means of every statistic over the probe texts."""
    import pandas as pd

    corpus = corpus_from_texts(probes)
    arch = discover(model.model)
    spec = ReportSpec(
        model.name,
        tuple(k.name for k in resolve_layers(arch, layers)),
        resolve_heads(arch, heads),
        diversity=False,
    )
    with eval_mode(model.model):
        tokens = token_counts(model, corpus)
        if next(model.model.parameters()).dtype == torch.float32:  # the kernel's one dtype
            native.prepare(sum(tokens))  # as head_report does, so both take the same path
        parts = [
            stats_partial(model, [corpus[i] for i in group], spec, [tokens[i] for i in group])
            for group in plan_groups(corpus, tokens, spec, batch_size, 0)
        ]
    combined = combine(parts, spec)
    return pd.DataFrame(
        [
            {
                "step": int(step),
                "layer": layer,
                "head": head,
                **{name: float(combined.mean[name][li, hi]) for name in spec.stats},
            }
            for li, layer in enumerate(spec.layers)
            for hi, head in enumerate(spec.heads)
        ]
    )


def _as_loaded(
    model: LoadedModel | torch.nn.Module, tokenizer: object | None, name: str | None
) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    if tokenizer is None:
        raise HeadmapError("recording heads of a bare torch model needs its tokenizer: pass tokenizer=")
    # a Trainer's model is a transformers model; capture needs only its forward and config
    return LoadedModel(
        model=cast("PreTrainedModel", model), tokenizer=tokenizer, name=name or type(model).__name__
    )


def check_monitor_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in MONITOR_EXTENSIONS:
        raise HeadmapError(f"monitor files are .csv or .parquet, not {path.suffix or '(none)'!r}: {path}")
    if not path.parent.is_dir():
        raise HeadmapError(f"cannot write {path}: the folder {path.parent} does not exist")
    return path


def append_rows(frame: pd.DataFrame, path: Path) -> None:
    """Append ``frame`` to a monitor file, refusing one with other columns (another model or layers)."""
    import pandas as pd

    if path.exists():
        old = read_monitor(path)
        if list(old.columns) != list(frame.columns):
            raise HeadmapError(f"{path} holds a monitor with other columns: write to a new file")
        if path.suffix.lower() == ".csv":
            frame.to_csv(path, mode="a", header=False, index=False)
            return
        frame = pd.concat([old, frame], ignore_index=True)
    if path.suffix.lower() == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)


def read_monitor(path: str | Path) -> pd.DataFrame:
    """A monitor file as a DataFrame, checked for the key columns."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise HeadmapError(f"monitor file {path} does not exist")
    try:
        frame = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pandas and pyarrow raise many kinds for a bad file
        raise HeadmapError(
            f"cannot read monitor file {path} ({type(exc).__name__}): is it a headmap monitor file?"
        ) from None
    missing = [c for c in KEY_COLUMNS if c not in frame.columns]
    if missing or len(frame.columns) <= len(KEY_COLUMNS):
        raise HeadmapError(
            f"{path} is not a headmap monitor file: it lacks the columns {', '.join(missing) or 'of statistics'}"
        )
    return frame


def record_heads(
    model: LoadedModel | torch.nn.Module,
    probes: Sequence[str],
    step: int,
    path: str | Path | None = None,
    *,
    tokenizer: object | None = None,
    name: str | None = None,
    layers: LayerSpec | Sequence[LayerSpec] | None = None,
    heads: int | Sequence[int] | None = None,
) -> pd.DataFrame:
    """Measure ``model`` on ``probes`` now, as ``step``; append the rows to ``path`` if given; return them.

    Call it from a training loop every N steps (a bare ``torch.nn.Module`` needs ``tokenizer``).
    """
    loaded = _as_loaded(model, tokenizer, name)
    target = check_monitor_path(path) if path is not None else None
    frame = probe_frame(loaded, probes, step, layers, heads)
    if target is not None:
        append_rows(frame, target)
    return frame


class _Recorder:
    """State shared by the callback: what to measure, where, and the last step written."""

    def __init__(
        self,
        tokenizer: object,
        probes: Sequence[str],
        path: str | Path,
        every: int,
        layers: LayerSpec | Sequence[LayerSpec] | None,
        heads: int | Sequence[int] | None,
        name: str | None,
    ) -> None:
        if every < 1:
            raise HeadmapError(f"every must be at least 1 step, not {every}")
        corpus_from_texts(probes)  # fail now, not at the first step
        self.tokenizer, self.probes, self.path, self.every = (
            tokenizer,
            list(probes),
            check_monitor_path(path),
            every,
        )
        self.layers, self.heads, self.name = layers, heads, name
        self.last: int | None = None

    def record(self, model: torch.nn.Module | None, step: int) -> None:
        if model is None or step == self.last:
            return
        record_heads(
            model,
            self.probes,
            step,
            self.path,
            tokenizer=self.tokenizer,
            name=self.name,
            layers=self.layers,
            heads=self.heads,
        )
        self.last = step


def _callback_class() -> type:
    from transformers import TrainerCallback

    class HeadMonitor(TrainerCallback):
        """A Trainer callback recording per-head statistics on ``probes`` at step 0, every ``every``
        steps and at the end of training, into ``path`` (``.csv`` or ``.parquet``)."""

        def __init__(
            self,
            tokenizer: object,
            probes: Sequence[str],
            path: str | Path,
            every: int = 50,
            layers: LayerSpec | Sequence[LayerSpec] | None = None,
            heads: int | Sequence[int] | None = None,
            name: str | None = None,
        ) -> None:
            self.recorder = _Recorder(tokenizer, probes, path, every, layers, heads, name)

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.recorder.record(model, state.global_step)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step % self.recorder.every == 0:
                self.recorder.record(model, state.global_step)

        def on_train_end(self, args, state, control, model=None, **kwargs):
            self.recorder.record(model, state.global_step)

    HeadMonitor.__module__, HeadMonitor.__qualname__ = __name__, "HeadMonitor"
    return HeadMonitor


_cached: list[type] = []
_cache_lock = threading.Lock()


def __getattr__(name: str) -> object:
    # transformers' trainer machinery takes ~0.6 s to import: only when the callback is used.
    if name == "HeadMonitor":
        with _cache_lock:  # one class for every thread, so isinstance checks agree
            if not _cached:
                _cached.append(_callback_class())
        return _cached[0]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "HeadMonitor",  # noqa: F822 - made on first use by the module __getattr__ above
    "append_rows",
    "probe_frame",
    "read_monitor",
    "record_heads",
]
