"""``audit()``: one decision of a model, its evidence, causal checks and provenance, as one record.

The record's JSON is the ground truth (:class:`~headmap.apps.audit.record.AuditRecord`); its HTML
and PDF are renderings of it. :func:`compute` takes only what the record's ``settings`` hold, so
``headmap verify`` re-runs exactly the same computation from a saved record.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headmap.apps.audit.compute import alternatives, faithfulness_of, head_effects, removals, roles_of
from headmap.apps.audit.provenance import provenance, sha256_text
from headmap.apps.audit.record import FORMAT, AuditRecord
from headmap.apps.audit.summary import caveats, summary
from headmap.attribution.attention import DEFAULT_LAYERS
from headmap.attribution.baselines import data_corpus
from headmap.attribution.explain import assemble, build_methods, method_names, problem_for
from headmap.attribution.flow import FLOW_MAX_TOKENS
from headmap.errors import HeadmapError
from headmap.models import LoadedModel, load

#: Reference sentences for the head roles unless told: the first lines of corpora/sentences.txt.
CORPUS_TEXTS = 16


def corpus_texts(corpus: str | Path | Sequence[str] | None, limit: int = CORPUS_TEXTS) -> list[str]:
    """The reference texts: a list as given, or the first ``limit`` non-comment lines of a file
    (default ``corpora/sentences.txt``)."""
    if corpus is not None and not isinstance(corpus, (str, Path)):
        return [str(t) for t in corpus]
    path = Path(corpus) if corpus is not None else data_corpus()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise HeadmapError(f"cannot read the reference corpus {path}: {exc}") from None
    texts = [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")][:limit]
    if not texts:
        raise HeadmapError(f"the reference corpus {path} has no texts: give a file with one sentence a line")
    return texts


def compute(loaded: LoadedModel, settings: dict[str, Any]) -> dict[str, Any]:
    """Every number of a record from ``settings`` (see :func:`audit`), without provenance."""
    torch.manual_seed(int(settings["seed"]))
    problem = problem_for(
        loaded,
        settings["text"],
        settings["target"],
        compare=settings["compare"],
        position=settings["position"],
    )
    chosen = build_methods(
        settings["methods"],
        layers=tuple(settings["layers"]),
        heads=None,
        n_steps=int(settings["n_steps"]),
        max_steps=int(settings["max_steps"]),
        internal_batch_size=16,
        baseline=settings["baseline"],
        batch_size=16,
        calibration=settings["calibration"],
        loaded=loaded,
    )
    results = [method.attribute(problem) for method in chosen]
    explanation = assemble(problem, results, settings.get("notes", ())).to_words()
    output = explanation.output
    target = problem.target.to_dict()
    decision = {
        "target": target,
        "output": output,
        "logprob": float(problem.target.evaluate(loaded.model, problem.inputs())[0])
        if target["kind"] in ("next-token", "masked-token")
        else None,
        "alternatives": alternatives(problem),
    }
    heads = head_effects(problem, int(settings["top_heads"]))
    roles = roles_of(problem, heads["top"], settings["corpus"])
    agreement = explanation.causal_agreement()
    record = {
        "decision": decision,
        "explanation": explanation.to_dict(),
        "agreement_with_occlusion": [
            {k: (v if isinstance(v, str) else _number(v)) for k, v in row.items()}
            for row in agreement.to_dict("records")
        ],
        "faithfulness": faithfulness_of(problem, results, output, int(settings["seed"])),
        "heads": {**heads, "roles": roles},
        "causal": {
            "removal": removals(problem, results, output, int(settings["top_k"])),
            "head_ablation": heads["together"],
        },
    }
    record["summary"] = summary(record)
    record["caveats"] = caveats(record)
    return record


def _number(value: Any) -> float | int | None:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    value = float(value)
    return value if np.isfinite(value) else None


def audit(
    model: LoadedModel | str,
    text: str,
    target: str | int | None = None,
    *,
    compare: str | None = None,
    position: int | None = None,
    methods: str | Sequence[str] | None = None,
    layers: Sequence[int | str] = DEFAULT_LAYERS,
    top_k: int = 3,
    top_heads: int = 3,
    corpus: str | Path | Sequence[str] | None = None,
    seed: int = 0,
    n_steps: int = 50,
    max_steps: int = 400,
    baseline: str | int = "auto",
    calibration: str | Path | None = None,
    command: Sequence[str] | None = None,
    source: str | None = None,
) -> AuditRecord:
    """An audit record of one output of ``model`` on ``text``.

    The output, ``target``/``compare``/``position`` and the ``methods`` are those of
    :func:`headmap.explain` (default: every method; flow only up to its token limit; calibrated with
    a ``calibration``). ``top_k``: the words removed in the causal check; ``top_heads``: how many of
    the heads with the largest single-head ablation effect are reported, role and all, and zeroed
    together. ``corpus``: reference texts for the head roles (a list, or a file: its first 16
    lines; default ``corpora/sentences.txt``). ``command``: the command line to record (default
    ``sys.argv``). ``source``: where a :class:`LoadedModel` was loaded from (its name or path, for
    the provenance and for ``verify``; default the name it carries). A model given by name or path has its files hashed, so the record can be
    checked with :func:`headmap.verify`; a model built in memory gives a record without files.
    """
    if callable(target):
        raise HeadmapError(
            "an audit record explains a token or a compare text: a target function cannot be recorded"
        )
    if top_k < 1 or top_heads < 1:
        raise HeadmapError("top_k and top_heads must be at least 1")
    source = model if isinstance(model, str) else source
    loaded = load(model) if isinstance(model, str) else model
    texts = corpus_texts(corpus)
    problem = problem_for(loaded, text, target, compare=compare, position=position)
    notes: list[str] = []
    if methods is None and problem.n > FLOW_MAX_TOKENS:
        names = [m for m in method_names(None, calibration is not None) if m != "flow"]
        notes.append(f"flow skipped: {problem.n} tokens is above its limit of {FLOW_MAX_TOKENS}")
    else:
        names = method_names(methods, calibration is not None)
    if "occlusion" not in names:
        names.append("occlusion")  # the causal reference every check of the record compares against
    settings: dict[str, Any] = {
        "text": text,
        "model": source or loaded.name,
        "target": target,
        "compare": compare,
        "position": position,
        "methods": names,
        "layers": list(layers),
        "top_k": top_k,
        "top_heads": top_heads,
        "corpus": texts,
        "seed": seed,
        "n_steps": n_steps,
        "max_steps": max_steps,
        "baseline": baseline,
        "calibration": None if calibration is None else str(Path(calibration).resolve()),
        "notes": notes,
    }
    record = compute(loaded, settings)
    cal = None if calibration is None else Path(calibration)
    origin = provenance(loaded, source, cal, command)
    origin["text_sha256"] = sha256_text(text)
    origin["verifiable"] = any(f["role"] == "model" for f in origin["files"])
    data = {"format": FORMAT, "settings": settings, "provenance": origin, **record}
    # Through JSON once: the record in memory is exactly the one read back from its .json file.
    return AuditRecord(json.loads(json.dumps(data, allow_nan=False)))


__all__ = ["CORPUS_TEXTS", "audit", "compute", "corpus_texts"]
