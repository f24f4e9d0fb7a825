"""RAG attribution at a middle cost: a ContextCite-style surrogate (Cohen-Wang et al. 2024).

``k`` random ablations of the chunks (each chunk kept with probability 1/2, seeded), the answer's
teacher-forced log-probability measured on each reduced prompt (the remaining chunks renumbered, as
the leave-one-out check does), then a sparse linear model of that log-probability on the 0/1 keep
masks (scikit-learn's Lasso; ContextCite regresses the logit of the answer's probability, which for
a multi-token answer is ill-defined; the summed log-probability is what the leave-one-out drops
measure too). A chunk's score is its coefficient: the log-probability the answer gains when the
chunk is present. ``k`` forwards for any number of chunks, against one per chunk for leave-one-out;
:func:`agreement` says how far the cheaper picture ranks the chunks as leave-one-out does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from headmap.apps.rag.causal import answer_token_logprobs, spearman
from headmap.apps.rag.prompt import build_prompt
from headmap.errors import HeadmapError
from headmap.models import LoadedModel

#: ContextCite's default number of ablations is 64; the issue's RAG check asks for 32 by default.
DEFAULT_ABLATIONS = 32
#: The Lasso's L1 weight on standardized log-probabilities (ContextCite uses 0.01 on its target).
DEFAULT_ALPHA = 0.01


@dataclass(frozen=True)
class Surrogate:
    """The fitted surrogate: ``masks`` ``[ablation, chunk]`` (1: kept), ``logprobs`` ``[ablation]`` (the
    answer's summed log-probability with those chunks), ``scores`` ``[chunk]`` (the coefficients),
    ``intercept``, the fit's R^2 on its own ablations, ``seconds`` for the forwards and the fit."""

    masks: np.ndarray
    logprobs: np.ndarray
    scores: np.ndarray
    intercept: float
    r2: float
    seconds: float

    def predict(self, masks: np.ndarray) -> np.ndarray:
        """``[ablation]``: the surrogate's log-probability for keep masks ``[ablation, chunk]``."""
        return self.intercept + np.asarray(masks, dtype=np.float64) @ self.scores


def ablation_masks(n_chunks: int, k: int, seed: int) -> np.ndarray:
    """``[k, n_chunks]`` 0/1 keep masks, each chunk kept with probability 1/2 (numpy, ``seed``)."""
    if k < 2:
        raise HeadmapError("the surrogate needs at least 2 ablations (ContextCite uses 32 to 64)")
    return np.random.default_rng(seed).integers(0, 2, size=(k, n_chunks)).astype(np.float64)


def fit(
    masks: np.ndarray, logprobs: np.ndarray, alpha: float = DEFAULT_ALPHA
) -> tuple[np.ndarray, float, float]:
    """``(scores [chunk], intercept, r2)``: a Lasso of ``logprobs`` on ``masks``, on a standardized
    target (so ``alpha`` does not depend on the answer's length) and scaled back."""
    from sklearn.linear_model import Lasso  # scikit-learn: the fit's own dependency, loaded when fitted

    y = np.asarray(logprobs, dtype=np.float64)
    scale = float(y.std()) or 1.0
    model = Lasso(alpha=alpha, max_iter=10_000).fit(masks, (y - y.mean()) / scale)
    scores = model.coef_ * scale
    intercept = float(y.mean() + model.intercept_ * scale)
    predicted = intercept + masks @ scores
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - predicted) ** 2).sum()) / total if total > 0 else float("nan")
    return scores, intercept, r2


def kept_logprob(
    loaded: LoadedModel,
    question: str,
    texts: Sequence[str],
    mask: Sequence[float] | np.ndarray,
    answer_ids: Sequence[int],
) -> float:
    """The answer's summed teacher-forced log-probability with only the chunks ``mask`` keeps (1: kept),
    the prompt rebuilt with them renumbered ``[1]..`` as leave-one-out does (one forward)."""
    kept = [t for t, keep in zip(texts, mask, strict=True) if keep]
    prompt = build_prompt(loaded.tokenizer, question, kept)
    return float(answer_token_logprobs(loaded, prompt.ids, answer_ids).sum())


def surrogate(
    loaded: LoadedModel,
    question: str,
    texts: Sequence[str],
    answer_ids: Sequence[int],
    *,
    k: int = DEFAULT_ABLATIONS,
    seed: int = 0,
    alpha: float = DEFAULT_ALPHA,
    tick: Callable[[], None] | None = None,
) -> Surrogate:
    """The surrogate of the answer's log-probability over the chunks ``texts`` (module docstring)."""
    start = time.perf_counter()
    masks = ablation_masks(len(texts), k, seed)
    logprobs = np.empty(k)
    for a, mask in enumerate(masks):
        logprobs[a] = kept_logprob(loaded, question, texts, mask, answer_ids)
        if tick is not None:
            tick()
    scores, intercept, r2 = fit(masks, logprobs, alpha)
    return Surrogate(masks, logprobs, scores, intercept, r2, time.perf_counter() - start)


@dataclass(frozen=True)
class Agreement:
    """How a method's chunk scores rank the chunks against leave-one-out's drops: Spearman, and
    whether both put the same chunk first."""

    spearman: float
    top1: bool


def agreement(scores: np.ndarray, drops: np.ndarray) -> Agreement:
    """``scores`` ``[chunk]`` against the leave-one-out ``drops`` ``[chunk]`` (higher: more needed)."""
    scores, drops = np.asarray(scores, dtype=np.float64), np.asarray(drops, dtype=np.float64)
    return Agreement(spearman(scores, drops), bool(np.argmax(scores) == np.argmax(drops)))
