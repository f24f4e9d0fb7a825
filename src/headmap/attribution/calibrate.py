"""Learning calibrated attention's weights from ablations (AT2-style).

For each corpus text: the explained output F is the log-probability of the model's top next token
(decoders; a [MASK] for masked LMs), the units are its words (or given chunks) except those that
hold special tokens or the explained position. ``masks`` random ablations keep each unit with
probability ``keep`` (seeded); each ablation's measured drop ``F(x) - F(x without the ablated
units)`` (batched forwards, :func:`~headmap.attribution.occlusion.occlusion_scores`) is regressed
on the sum of the ablated units' features (:func:`~headmap.attribution.calibrated.token_features`):
``drop ~ sum_{ablated u} w . features(u)`` with ``w >= 0`` and no intercept (nothing ablated, no
drop). The fit is scikit-learn's non-negative least squares (``LinearRegression(positive=True)``)
or, with ``alpha > 0``, ``Lasso(positive=True)`` (an L1 penalty that zeroes uninformative heads).

A held-out share of the texts scores the weights: R² of the predicted drops of their ablations,
and per text the Spearman correlation and top-1 agreement of the calibrated unit scores with
leave-one-out (removing one unit).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from headmap.attribution.base import Problem
from headmap.attribution.calibrated import Calibration, model_hash, token_features, unit_features
from headmap.attribution.explain import problem_for
from headmap.attribution.occlusion import occlusion_scores
from headmap.errors import HeadmapError
from headmap.models import LoadedModel, load


@dataclass(frozen=True)
class Sample:
    """One text's ablations: design rows ``x[mask, layer*head]``, drops ``y[mask]``, and for the
    held-out scores its unit features ``[unit, layer*head]``."""

    x: np.ndarray
    y: np.ndarray
    units: np.ndarray
    problem: Problem
    groups: tuple[tuple[int, ...], ...]
    shape: tuple[int, ...]


def ablation_units(problem: Problem) -> tuple[tuple[int, ...], ...]:
    """The words that may be ablated: no special token, not the explained position, and visible
    to the output (a decoder's output does not see later words)."""
    visible = problem.target.visible(problem.n)
    keep = []
    for group in problem.groups:
        if any(problem.tokens.special[i] for i in group) or problem.position in group:
            continue
        if not all(visible[i] for i in group):
            continue
        keep.append(tuple(group))
    return tuple(keep)


def sample_text(
    problem: Problem,
    units: Sequence[Sequence[int]],
    *,
    masks: int,
    keep: float,
    rng: np.random.Generator,
    batch_size: int = 16,
) -> Sample | None:
    """One text's random ablations and their measured drops (None when it has under 2 units)."""
    if len(units) < 2:
        return None
    tokens = token_features(problem)
    feats = unit_features(tokens, units).reshape(len(units), -1)
    kept = rng.random((masks, len(units))) < keep
    kept = kept[~kept.all(1)]  # an ablation removes something
    removed = [tuple(i for u in np.flatnonzero(~row) for i in units[int(u)]) for row in kept]
    drops = occlusion_scores(problem, removed, problem.output(), batch_size)
    ok = np.isfinite(drops)
    x = (~kept[ok]).astype(np.float64) @ feats
    return Sample(x, drops[ok], feats, problem, tuple(tuple(u) for u in units), tokens.shape[1:])


def fit_weights(x: np.ndarray, y: np.ndarray, alpha: float = 0.0) -> np.ndarray:
    """Non-negative ``w`` with ``y ~ x @ w`` and no intercept (NNLS, or positive Lasso when ``alpha > 0``)."""
    from sklearn.linear_model import Lasso, LinearRegression

    if len(y) == 0:
        raise HeadmapError("no ablation could be measured: give longer texts or more of them")
    model = (
        Lasso(alpha=alpha, positive=True, fit_intercept=False, max_iter=10000)
        if alpha > 0
        else LinearRegression(positive=True, fit_intercept=False)
    )
    model.fit(x, y)
    return np.clip(np.asarray(model.coef_, dtype=np.float64), 0.0, None)


def heldout_scores(samples: Sequence[Sample], w: np.ndarray, batch_size: int = 16) -> dict[str, float]:
    """R² over the held-out ablations; mean Spearman and top-1 agreement with leave-one-out."""
    from scipy.stats import spearmanr

    if not samples:
        return {}
    y = np.concatenate([s.y for s in samples])
    pred = np.concatenate([s.x @ w for s in samples])
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - pred) ** 2).sum()) / total if total > 0 else float("nan")
    rhos, tops = [], []
    for s in samples:
        loo = occlusion_scores(s.problem, s.groups, s.problem.output(), batch_size)
        scores = s.units @ w
        ok = np.isfinite(loo)
        if ok.sum() >= 2:
            rho = spearmanr(scores[ok], loo[ok]).statistic
            if np.isfinite(rho):
                rhos.append(float(rho))
            tops.append(
                float(np.argmax(np.where(ok, scores, -np.inf)) == np.argmax(np.where(ok, loo, -np.inf)))
            )
    return {
        "r2": r2,
        "spearman": float(np.mean(rhos)) if rhos else float("nan"),
        "top1": float(np.mean(tops)) if tops else float("nan"),
        "texts": len(samples),
        "ablations": int(len(y)),
    }


def compare_texts(texts: Sequence[str], compare: str | Sequence[str] | None) -> list[str | None]:
    """Each text's compare text: None (language models), one ``str`` for every text, or one per text."""
    if compare is None:
        return [None] * len(texts)
    if isinstance(compare, str):
        return [compare] * len(texts)
    given = list(compare)
    if len(given) != len(texts):
        raise HeadmapError(
            f"compare has {len(given)} texts for {len(texts)} corpus texts: give one compare text, or one per text"
        )
    return list(given)


def next_texts(texts: Sequence[str]) -> list[str]:
    """Each text's successor in the corpus (the last wraps to the first): the MiniLM convention of
    benchmarks/faithfulness.py, the cosine of a sentence with the next one."""
    return [texts[(i + 1) % len(texts)] for i in range(len(texts))]


def heldout_split(n: int, holdout: float, rng: np.random.Generator) -> set[int]:
    """The indices held out of the fit: a ``holdout`` share of ``n`` (at least one when ``n >= 2``
    and ``holdout > 0``; none of a single text), drawn from ``rng``."""
    order = rng.permutation(n)
    n_out = int(round(holdout * n)) if n > 1 else 0
    n_out = max(n_out, 1) if holdout > 0 and n > 1 else n_out
    return set(order[:n_out].tolist())


def corpus_hash(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def calibrate(
    model: LoadedModel | str,
    texts: Sequence[str],
    *,
    masks: int = 32,
    keep: float = 0.5,
    holdout: float = 0.2,
    alpha: float = 0.0,
    seed: int = 0,
    batch_size: int = 16,
    units: Callable[[Problem], Sequence[Sequence[int]]] | None = None,
    compare: str | Sequence[str] | None = None,
    progress: bool = False,
) -> Calibration:
    """Learn calibrated attention's weights for ``model`` from ``texts`` (see the module).

    ``masks``: random ablations per text, each keeping a word with probability ``keep``;
    ``holdout``: the share of texts (at least one when there are 2+) kept out of the fit to score
    it; ``alpha``: the Lasso penalty (0: plain non-negative least squares); ``seed``: the masks
    and the split. ``units``: ``problem -> token groups`` to ablate (default
    :func:`ablation_units`, the words; e.g. a RAG prompt's chunks). ``compare``: for encoders
    without a language-model head (MiniLM), the explained output is the cosine of the text's
    mean-pooled embedding with that of a compare text: one text for all, or one per text (see
    :func:`compare_texts`); None for language models (the top next or masked token).
    """
    loaded = load(model) if isinstance(model, str) else model
    pairs = [(t, c) for t, c in zip(texts, compare_texts(texts, compare), strict=True) if t.strip()]
    texts = [t for t, _ in pairs]
    compares = [c for _, c in pairs]
    if not texts:
        raise HeadmapError("calibrate needs at least one non-empty text")
    if not 0.0 < keep < 1.0 or masks < 1 or not 0.0 <= holdout < 1.0:
        raise HeadmapError("calibrate needs 0 < keep < 1, masks >= 1 and 0 <= holdout < 1")
    rng = np.random.default_rng(seed)
    held = heldout_split(len(texts), holdout, rng)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(texts), desc="calibrate", unit="text", leave=False)
    fit: list[Sample] = []
    test: list[Sample] = []
    shape: tuple[int, ...] = ()
    kind = ""
    try:
        for i, text in enumerate(texts):
            problem = problem_for(loaded, text, compare=compares[i])
            kind = problem.target.kind
            sample = sample_text(
                problem,
                (units or ablation_units)(problem),
                masks=masks,
                keep=keep,
                rng=rng,
                batch_size=batch_size,
            )
            if sample is not None:
                (test if i in held else fit).append(sample)
                shape = sample.shape
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if not fit:
        raise HeadmapError("no training text has two or more words to ablate")
    w = fit_weights(np.concatenate([s.x for s in fit]), np.concatenate([s.y for s in fit]), alpha)
    if not w.any():
        raise HeadmapError(
            "every head's weight fit to 0: no non-negative mix of attention predicts the measured drops "
            "(they are mostly negative or noise), so calibrated attention would score every unit 0; "
            + (
                "for an embedding model try --compare-self (compare= the texts themselves)"
                if compare is not None
                else "give more or longer texts, or a lower --alpha"
            )
        )
    meta: dict[str, object] = {
        "model": loaded.name,
        "model_hash": model_hash(loaded),
        "corpus_hash": corpus_hash(texts if compare is None else [*texts, *(c or "" for c in compares)]),
        "settings": {
            "masks": masks,
            "keep": keep,
            "holdout": holdout,
            "alpha": alpha,
            "seed": seed,
            "units": "words" if units is None else getattr(units, "__name__", "custom"),
            "rows": "explained position (mean of all rows when pooled)",
            "target": "the model's top token at the explained position"
            if compare is None
            else "cosine of the mean-pooled embedding with the compare text",
            "target_kind": kind,
            "compare": None
            if compare is None
            else ("one text" if isinstance(compare, str) else "one per text"),
        },
        "train": {"texts": len(fit), "ablations": int(sum(len(s.y) for s in fit))},
        "heldout": heldout_scores(test, w, batch_size),
        "headmap": headmap_version(),
    }
    return Calibration(w.reshape(shape), meta)


def headmap_version() -> str:
    """The installed headmap version (written into calibration files)."""
    from importlib import metadata

    try:
        return metadata.version("headmap")
    except metadata.PackageNotFoundError:
        return "0+unknown"
