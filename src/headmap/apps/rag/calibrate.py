"""AT2-style head weights learned on RAG chunks: the calibration ``rag(..., calibration=)`` wants.

``headmap calibrate`` learns its weights on word ablations of a next-token target; a RAG report
weights each head's answer-row mass on *chunks* and is checked against the *answer's summed
log-probability*. :func:`calibrate_rag` learns on exactly that. Per example ``{question, chunks,
answer}`` (the answer teacher-forced, tokenized as ``rag(answer=TEXT)`` does):

- the prompt :func:`~headmap.apps.rag.prompt.build_prompt` builds, and one streamed capture of the
  answer rows (:func:`~headmap.apps.rag.features.answer_evidence`, the code ``rag()`` runs): features
  ``f[chunk, layer, head]``, the answer rows' mass on the chunk summed over the answer tokens;
- the answer's summed log-probability with all chunks, then ``ablations`` seeded random keep-masks
  (each chunk kept with probability ``keep``; a mask keeping everything is dropped), each reduced
  prompt renumbered as leave-one-out and the surrogate do (:func:`~headmap.apps.rag.surrogate.kept_logprob`);
- a regression row per mask: ``x`` = the sum of the removed chunks' features, ``y`` = the full
  log-probability minus the reduced one; the fit is non-negative with no intercept
  (:func:`~headmap.attribution.calibrate.fit_weights`).

A seeded share of the examples is held out: the fit's R² on their ablations and, per example, the
Spearman and top-1 agreement of ``features . w`` with leave-one-out's drops (one forward per chunk).
Examples with fewer than two chunks are skipped (nothing to rank).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headmap.apps.rag.chunks import as_chunks
from headmap.apps.rag.features import answer_evidence, chunk_features
from headmap.apps.rag.prompt import build_prompt, check_causal_lm, encode_answer
from headmap.apps.rag.run import check_length
from headmap.apps.rag.surrogate import agreement, kept_logprob
from headmap.attribution.calibrate import corpus_hash, fit_weights, headmap_version, heldout_split
from headmap.attribution.calibrated import Calibration, model_hash
from headmap.errors import HeadmapError
from headmap.models import LoadedModel, load

#: What one line of a ``--rag`` corpus must hold.
EXAMPLE_FORM = '{"question": "...", "chunks": ["...", "..."], "answer": "..."}'


@dataclass(frozen=True)
class RagExample:
    """One validated example: the question, the chunk texts and the answer text."""

    question: str
    chunks: tuple[str, ...]
    answer: str

    def to_json(self) -> str:
        return json.dumps(
            {"question": self.question, "chunks": list(self.chunks), "answer": self.answer}, sort_keys=True
        )


def as_example(value: object, where: str = "the example") -> RagExample:
    """A mapping ``{question, chunks, answer}`` checked and normalized (chunks: strings or ``{"text"}``)."""
    if not isinstance(value, Mapping):
        raise HeadmapError(f"{where} is not an object: give {EXAMPLE_FORM}")
    question, answer, chunks = value.get("question"), value.get("answer"), value.get("chunks")
    for name, field in (("question", question), ("answer", answer)):
        if not isinstance(field, str) or not field.strip():
            raise HeadmapError(f'{where}: "{name}" must be a non-empty string; give {EXAMPLE_FORM}')
    if not isinstance(chunks, Sequence) or isinstance(chunks, (str, bytes)):
        raise HeadmapError(f'{where}: "chunks" must be a list of texts; give {EXAMPLE_FORM}')
    texts = tuple(c.text for c in as_chunks(chunks, source=where))
    return RagExample(str(question), texts, str(answer))


def read_examples(path: str | Path, limit: int | None = None) -> list[RagExample]:
    """The examples of a JSON-lines file (blank lines skipped); a bad line names its number and the fix."""
    source = Path(path)
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise HeadmapError(f"example file {source} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HeadmapError(f"cannot read example file {source}: {exc}") from None
    out: list[RagExample] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source} line {number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HeadmapError(
                f"{where} is not JSON ({exc.msg}): give one object a line, {EXAMPLE_FORM}"
            ) from None
        out.append(as_example(value, where))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise HeadmapError(f"{source} holds no example: give one {EXAMPLE_FORM} a line")
    return out


@dataclass(frozen=True)
class RagSample:
    """One example measured: ``features`` ``[chunk, layer, head]``, the full prompt's summed answer
    log-probability ``logprob``, keep masks ``kept`` ``[ablation, chunk]`` and each reduced prompt's
    ``logprobs`` ``[ablation]``."""

    example: RagExample
    answer_ids: tuple[int, ...]
    features: np.ndarray
    logprob: float
    kept: np.ndarray
    logprobs: np.ndarray

    @property
    def x(self) -> np.ndarray:
        """``[ablation, layer*head]``: the sum of the removed chunks' features."""
        return (~self.kept).astype(np.float64) @ self.features.reshape(len(self.features), -1)

    @property
    def y(self) -> np.ndarray:
        """``[ablation]``: the answer's log-probability drop when those chunks are removed."""
        return self.logprob - self.logprobs


def sample_example(
    loaded: LoadedModel, example: RagExample, *, ablations: int, keep: float, rng: np.random.Generator
) -> RagSample | None:
    """One example's features and ablations (None with fewer than 2 chunks); ``1 + 1 + ablations`` forwards."""
    n = len(example.chunks)
    if n < 2:
        return None
    tokenizer = loaded.tokenizer
    answer_ids = encode_answer(tokenizer, example.answer)
    prompt = build_prompt(tokenizer, example.question, example.chunks)
    check_length(loaded, len(prompt) + len(answer_ids), "the prompt with the answer")
    features = chunk_features(answer_evidence(loaded, prompt, answer_ids).mass)
    logprob = kept_logprob(loaded, example.question, example.chunks, [1] * n, answer_ids)
    kept = rng.random((ablations, n)) < keep
    kept = kept[~kept.all(1)]  # an ablation removes something
    logprobs = np.array(
        [kept_logprob(loaded, example.question, example.chunks, mask, answer_ids) for mask in kept]
    )
    return RagSample(example, tuple(answer_ids), features, logprob, kept, logprobs.reshape(len(kept)))


def leave_one_out(loaded: LoadedModel, sample: RagSample) -> np.ndarray:
    """``[chunk]``: the answer's log-probability drop with each chunk removed (one forward each)."""
    ex, n = sample.example, len(sample.example.chunks)
    return np.array(
        [
            sample.logprob
            - kept_logprob(loaded, ex.question, ex.chunks, np.arange(n) != c, sample.answer_ids)
            for c in range(n)
        ]
    )


def heldout_scores(loaded: LoadedModel, samples: Sequence[RagSample], w: np.ndarray) -> dict[str, float]:
    """R² over the held-out ablations; mean Spearman and top-1 agreement of ``features . w`` with
    leave-one-out (empty without held-out examples)."""
    if not samples:
        return {}
    y = np.concatenate([s.y for s in samples])
    pred = np.concatenate([s.x @ w for s in samples])
    total = float(((y - y.mean()) ** 2).sum()) if len(y) else 0.0
    r2 = 1.0 - float(((y - pred) ** 2).sum()) / total if total > 0 else float("nan")
    rhos, tops = [], []
    for s in samples:
        found = agreement(s.features.reshape(len(s.features), -1) @ w, leave_one_out(loaded, s))
        if np.isfinite(found.spearman):
            rhos.append(found.spearman)
        tops.append(float(found.top1))
    return {
        "r2": r2,
        "spearman": float(np.mean(rhos)) if rhos else float("nan"),
        "top1": float(np.mean(tops)),
        "examples": len(samples),
        "ablations": int(len(y)),
    }


def calibrate_rag(
    model: LoadedModel | str,
    examples: Sequence[Mapping[str, object] | RagExample],
    *,
    ablations: int = 32,
    keep: float = 0.5,
    holdout: float = 0.2,
    alpha: float = 0.0,
    seed: int = 0,
    progress: bool = False,
) -> Calibration:
    """Learn per-(layer, head) weights for ``rag(..., calibration=)`` from chunk ablations (module).

    ``examples``: ``{"question", "chunks": [str], "answer"}`` mappings (the answer is required and
    teacher-forced). ``ablations``: random keep-masks per example, each keeping a chunk with
    probability ``keep``; ``holdout``: the share of examples (at least one when there are 2+) kept out
    of the fit to score it; ``alpha``: the positive Lasso's penalty (0: non-negative least squares);
    ``seed``: the split and the masks. Forwards per example: ``2 + ablations``, plus one per chunk
    for a held-out one.
    """
    loaded = load(model) if isinstance(model, str) else model
    check_causal_lm(loaded)
    items = [
        e if isinstance(e, RagExample) else as_example(e, f"example {i + 1}") for i, e in enumerate(examples)
    ]
    if not items:
        raise HeadmapError("calibrate_rag needs at least one example {question, chunks, answer}")
    if not 0.0 < keep < 1.0 or ablations < 1 or not 0.0 <= holdout < 1.0:
        raise HeadmapError("calibrate_rag needs 0 < keep < 1, ablations >= 1 and 0 <= holdout < 1")
    rng = np.random.default_rng(seed)
    held = heldout_split(len(items), holdout, rng)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc="calibrate (rag)", unit="example", leave=False)
    fit: list[RagSample] = []
    test: list[RagSample] = []
    try:
        for i, example in enumerate(items):
            sample = sample_example(loaded, example, ablations=ablations, keep=keep, rng=rng)
            if sample is not None:
                (test if i in held else fit).append(sample)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if not fit:
        raise HeadmapError("no training example has two or more chunks to ablate")
    shape = fit[0].features.shape[1:]
    w = fit_weights(np.concatenate([s.x for s in fit]), np.concatenate([s.y for s in fit]), alpha)
    meta: dict[str, object] = {
        "model": loaded.name,
        "model_hash": model_hash(loaded),
        "corpus_hash": corpus_hash([e.to_json() for e in items]),
        "settings": {
            "ablations": ablations,
            "keep": keep,
            "holdout": holdout,
            "alpha": alpha,
            "seed": seed,
            "units": "rag chunks",
            "rows": "answer rows (the positions predicting the answer tokens), summed",
            "target": "the answer's summed log-probability",
        },
        "train": {"examples": len(fit), "ablations": int(sum(len(s.y) for s in fit))},
        "heldout": heldout_scores(loaded, test, w),
        "headmap": headmap_version(),
    }
    return Calibration(w.reshape(shape), meta)


__all__ = ["EXAMPLE_FORM", "RagExample", "RagSample", "as_example", "calibrate_rag", "read_examples"]
