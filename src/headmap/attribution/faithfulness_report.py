"""``faithfulness()`` over a corpus and its :class:`FaithfulnessReport` (the common report contract).

Each text is explained (:func:`~headmap.attribution.explain.problem_for`), every method is
measured (:func:`~headmap.attribution.faithfulness.measure`) and one record per text is appended
to ``records`` as soon as it is done, so an interrupted run keeps its finished texts. Summaries are
means over texts with 95% percentile bootstrap intervals (seeded numpy resampling of texts).
"""

from __future__ import annotations

import html
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from headmap.attribution.attention import DEFAULT_LAYERS
from headmap.attribution.calibrate import compare_texts
from headmap.attribution.calibrated import Calibration
from headmap.attribution.explain import build_methods, method_names, problem_for
from headmap.attribution.faithfulness import ERASER_BINS, GRID, bootstrap, make_units, measure
from headmap.attribution.occlusion import occlusion_scores
from headmap.errors import HeadmapError
from headmap.models import LoadedModel, load
from headmap.render.report import Report, format_number, json_number, json_numbers
from headmap.result import CAUSATION_WARNING

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

#: What faithfulness runs unless told: cheap on long texts.
DEFAULT_METHODS = ("attention", "input_x_gradient", "occlusion")
METRICS = ("aopc", "random_aopc", "comprehensiveness", "sufficiency", "loo_spearman")


@dataclass
class FaithfulnessReport(Report):
    """Per-text records (``records``: one dict per text and method) and their bootstrap summary."""

    model: str
    units: str
    grid: tuple[float, ...]
    records: list[dict[str, Any]] = field(default_factory=list)
    seed: int = 0
    n_boot: int = 1000

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(r["method"] for r in self.records))

    def summary(self) -> dict[str, dict[str, tuple[float, float, float]]]:
        """``{method: {metric: (mean, low, high)}}`` over texts."""
        out: dict[str, dict[str, tuple[float, float, float]]] = {}
        for m in self.methods:
            rows = [r for r in self.records if r["method"] == m]
            out[m] = {
                k: bootstrap([np.nan if r[k] is None else r[k] for r in rows], self.n_boot, self.seed)
                for k in METRICS
            }
        return out

    def mean_curve(self, method: str, kind: str) -> np.ndarray:
        """The mean over texts of ``output - curve`` (the drop) at each grid point."""
        rows = [
            np.asarray([np.nan if v is None else v for v in r[kind]], float) - r["output"]
            for r in self.records
            if r["method"] == method
        ]
        if not rows:
            return np.full(len(self.grid), np.nan)
        with warnings.catch_warnings():
            # Deletion of every unit and insertion of none have no value by design: NaN there, not a warning.
            warnings.simplefilter("ignore", RuntimeWarning)
            return -np.nanmean(np.vstack(rows), axis=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "faithfulness",
            "model": self.model,
            "units": self.units,
            "grid": list(self.grid),
            "seed": self.seed,
            "n_boot": self.n_boot,
            "summary": {
                m: {k: json_numbers(list(v)) for k, v in s.items()} for m, s in self.summary().items()
            },
            "records": self.records,
            "warning": CAUSATION_WARNING,
        }

    tabular = True  # to_pandas() is the table: .parquet is written too

    def to_pandas(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame([{k: v for k, v in r.items() if not isinstance(v, list)} for r in self.records])

    def figure(self, **options: Any) -> Figure:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
        for m in self.methods:
            axes[0].plot(self.grid, self.mean_curve(m, "deletion"), marker="o", label=m)
            axes[1].plot(self.grid, self.mean_curve(m, "insertion"), marker="o", label=m)
        if self.methods:
            axes[0].plot(
                self.grid, self.mean_curve(self.methods[0], "random_deletion"), "k--", label="random"
            )
        axes[0].set(title="deletion: drop of F, top-k% removed", xlabel="% units removed", ylabel="F(x) - F")
        axes[1].set(title="insertion: drop of F, only top-k% kept", xlabel="% units kept")
        axes[0].legend(fontsize=8)
        fig.text(0.01, 0.0, CAUSATION_WARNING, fontsize=7)
        return fig

    def page(self, **options: Any) -> str:
        e = html.escape
        head = "".join(f"<th>{e(k)}</th>" for k in METRICS)
        rows = []
        for m, s in self.summary().items():
            cells = "".join(
                f"<td>{format_number(v[0])} [{format_number(v[1])}, {format_number(v[2])}]</td>"
                for v in s.values()
            )
            rows.append(f"<tr><td>{e(m)}</td>{cells}</tr>")
        texts = "".join(
            f"<li>{e(str(r['text'])[:200])}</li>"
            for r in self.records
            if r["method"] == (self.methods or [""])[0]
        )
        return (
            f"<div><h3>Faithfulness on {e(self.model)} ({e(self.units)})</h3>"
            f"<table><tr><th>method</th>{head}</tr>{''.join(rows)}</table>"
            f"<details><summary>texts</summary><ol>{texts}</ol></details>"
            f"<p><em>{e(CAUSATION_WARNING)}</em></p></div>"
        )

    def _title(self) -> str:
        return f"headmap faithfulness: {self.model}"


def faithfulness(
    model: LoadedModel | str,
    texts: str | Sequence[str],
    methods: str | Sequence[str] = DEFAULT_METHODS,
    *,
    units: str = "words",
    target: str | int | None = None,
    compare: str | Sequence[str] | None = None,
    grid: Sequence[float] = GRID,
    bins: Sequence[float] = ERASER_BINS,
    seed: int = 0,
    n_boot: int = 1000,
    batch_size: int = 16,
    n_steps: int = 32,
    progress: bool = False,
    report: FaithfulnessReport | None = None,
    calibration: Calibration | str | Path | None = None,
) -> FaithfulnessReport:
    """Deletion/insertion curves, AOPC, comprehensiveness, sufficiency and agreement with
    leave-one-out for each method over ``texts`` (see :mod:`headmap.attribution.faithfulness`).

    ``compare``: explain the cosine similarity with this text, or with one text per text
    (encoders without an LM head; pass ``texts`` itself for each text's similarity to its own
    unablated embedding).
    ``units``: ``"words"``, ``"sentences"`` or ``"tokens"``. ``report``: a report to append to
    (its finished records are kept; a run interrupted by an exception still leaves them there).
    ``calibration``: AT2-style head weights (``headmap calibrate``), for the method ``calibrated``.
    Cost per text and method: about ``2 * len(grid) + 2 * len(bins) + len(grid)`` forwards of the
    shortened text, plus occlusion's one forward per unit and the method itself.
    """
    if units not in ("words", "sentences", "tokens"):
        raise HeadmapError(f"unknown units {units!r}: choose words, sentences or tokens")
    loaded = load(model) if isinstance(model, str) else model
    texts = [texts] if isinstance(texts, str) else list(texts)
    compares = compare_texts(texts, compare)
    names = method_names(methods)
    chosen = build_methods(
        names,
        layers=DEFAULT_LAYERS,
        heads=None,
        n_steps=n_steps,
        max_steps=400,
        internal_batch_size=16,
        baseline="auto",
        batch_size=batch_size,
        calibration=calibration,
        loaded=loaded,
    )
    out = report or FaithfulnessReport(
        loaded.name, units, tuple(float(k) for k in grid), seed=seed, n_boot=n_boot
    )
    done = {r["text_index"] for r in out.records}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(texts), desc="texts", unit="text", leave=False)
    try:
        for t, text in enumerate(texts):
            if t not in done:
                problem = problem_for(loaded, text, target, compare=compares[t])
                groups = make_units(problem, units)
                output = problem.output()
                loo = occlusion_scores(problem, groups, output, batch_size)
                for method in chosen:
                    f = measure(
                        problem,
                        method.attribute(problem),
                        groups,
                        output=output,
                        loo=loo,
                        grid=grid,
                        bins=bins,
                        seed=seed + t,
                        batch_size=batch_size,
                    )
                    out.records.append(
                        {
                            "text_index": t,
                            "text": text,
                            "method": f.method,
                            "signed": f.signed,
                            "output": f.output,
                            "units": len(groups),
                            **{k: json_number(v) for k, v in f.summary().items()},
                            "deletion": json_numbers(f.deletion),
                            "insertion": json_numbers(f.insertion),
                            "random_deletion": json_numbers(f.random_deletion),
                        }
                    )
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return out
