"""The causal check: teacher-forced log-probabilities of the answer with each chunk removed.

The answer's log-probability is the sum over its tokens of ``log_softmax(logits)`` at the position
that predicts each token (the one before it), with exactly the answer ids of the full run forced.
Removing a chunk rebuilds the prompt without it, the remaining chunks renumbered ``[1]..[n-1]`` as
a user's pipeline would; the drop is ``logp(answer | all chunks) - logp(answer | without the chunk)``,
so a chunk the answer needs has a large positive drop.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from headmap.models import LoadedModel
from headmap.models.devices import input_device

#: Spearman between the two rankings at or above which the attention picture counts as supported
#: (when the top chunks also agree).
SUPPORTED_RHO = 0.5


def _accepts(model: torch.nn.Module, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def answer_token_logprobs(
    loaded: LoadedModel, prompt_ids: Sequence[int], answer_ids: Sequence[int]
) -> np.ndarray:
    """``[answer_token]`` float64: log p(answer token t | prompt, answer tokens before t), teacher-forced.

    One forward over ``prompt + answer``; only the logits of the predicting positions are computed
    where the model supports ``logits_to_keep`` (the same numbers: the head is applied row by row).
    The log-softmax runs in float64: in float32 it was off by ~1e-4 nats on the bundled vault example
    (unlikely tokens over a 49k vocabulary), far above the 1e-5 the numbers are checked to.
    """
    model = loaded.model
    n = len(answer_ids)
    device = input_device(model)
    ids = torch.tensor([[*prompt_ids, *answer_ids]], device=device)
    keep = {"logits_to_keep": n + 1} if _accepts(model, "logits_to_keep") else {}
    with torch.inference_mode():
        logits = model(input_ids=ids, use_cache=False, **keep).logits[0]
    predicting = logits[-n - 1 : -1].double()  # [answer_token, vocab]: positions P-1 .. P+A-2
    targets = torch.tensor(list(answer_ids), device=predicting.device)[:, None]
    return torch.log_softmax(predicting, dim=-1).gather(-1, targets)[:, 0].cpu().numpy()


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho (scipy, average ranks for ties); NaN with fewer than 3 values or a constant side."""
    from scipy.stats import spearmanr

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(a, b).statistic)


def ranks(values: np.ndarray) -> np.ndarray:
    """1 = the largest value (ties share the better rank, then by slot order)."""
    order = sorted(range(len(values)), key=lambda i: (-float(values[i]), i))
    out = np.empty(len(values), dtype=np.int64)
    for rank, i in enumerate(order, start=1):
        out[i] = rank
    return out


def verdict(ids: Sequence[str], attention: np.ndarray, drop: np.ndarray, rho: float, what: str) -> str:
    """One sentence: does the ablation support the chunk ranking that ``what`` (an attention score) suggests?

    Supported: the same top chunk and rho >= :data:`SUPPORTED_RHO`; partly: one of the two; else not.
    """
    n = len(ids)
    top_attention, top_drop = ids[int(np.argmax(attention))], ids[int(np.argmax(drop))]
    if n == 1:
        return (
            f"{what}: one chunk, nothing to rank; removing it changes the answer's log-probability by "
            f"{-float(drop[0]):+.3f}."
        )
    if np.ptp(drop) == 0:
        return f"{what}: not testable, removing any one chunk changes the answer's log-probability equally."
    same_top = top_attention == top_drop
    if n < 3:
        agree = (
            f"both point to chunk {top_drop!r}"
            if same_top
            else f"it points to chunk {top_attention!r}, removal to chunk {top_drop!r}"
        )
        return f"{what}: {n} chunks are too few to compare rankings; {agree}."
    if same_top and rho >= SUPPORTED_RHO:
        judgement = "supported"
    elif same_top or rho >= SUPPORTED_RHO:
        judgement = "partly supported"
    else:
        judgement = "not supported"
    top = (
        f"both rank chunk {top_drop!r} first"
        if same_top
        else f"it ranks chunk {top_attention!r} first, but removing chunk {top_drop!r} hurts the answer most"
    )
    return f"{what} is {judgement} by the causal check: {top} (Spearman rho = {rho:.2f} over {n} chunks)."
