"""Attention evidence of a RAG answer, reduced while streaming: chunk mass, lookback, calibration.

**Rows.** The attention that belongs to answer token ``t`` is the row of the query position that
*predicts* it, the position just before it: answer token 0 reads from the last prompt token, answer
token ``t`` from answer token ``t - 1``. Only these rows are captured.

**Chunk mass.** For each captured layer, head, answer token and chunk: the sum of that row's
weights over the chunk's tokens. Blocks are reduced to these sums as they arrive (one matrix
product with a key-to-chunk assignment), so no attention map is ever held.

**Lookback ratio** (Chuang et al. 2024) per head: at answer step ``t`` the mean weight on the
*context*, here the chunks' tokens (the template, labels and question are not context), divided
by that plus the mean weight on the ``t`` answer tokens already generated; the ratio is averaged
over steps ``t >= 1``. Step 0 has no generated tokens (a mean over none is undefined) and is left
out; a one-token answer has no lookback ratio (NaN), nor has a head that gives neither group any weight.

**Calibration** (Hsieh et al. 2024): attention is U-shaped in position, so each slot's mass is
also measured with its chunk replaced by :func:`dummy_text` of about the same token length, with
the same answer teacher-forced; calibrated attention = real mass - dummy mass. A chunk is flagged
"ignored" when its calibrated attention is below :data:`IGNORED_BELOW` times the dummy's mass.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from headmap.apps.group_mass import KeyGroups

#: A chunk is flagged "ignored" when its calibrated attention (its mass minus the dummy's in the same
#: slot) is below this share of the dummy's mass: it draws less than 25% more attention than
#: content-free text of its length would in its place.
IGNORED_BELOW = 0.25
#: The neutral text a dummy chunk repeats (cut to the chunk's token length).
DUMMY_SENTENCE = "This placeholder text is here only to fill the space and says nothing at all."


def key_groups(length: int, chunk_tokens: Sequence[tuple[int, int]], answer_start: int) -> KeyGroups:
    """Groups for a text of ``length`` tokens: chunk ``c`` over ``chunk_tokens[c]``, the answer from ``answer_start``."""
    group = np.full(length, -1, dtype=np.int64)
    for c, (first, stop) in enumerate(chunk_tokens):
        group[first:stop] = c
    group[answer_start:] = len(chunk_tokens)
    return KeyGroups(group, len(chunk_tokens) + 1)


def answer_rows(answer_length: int) -> list[int]:
    """Negative row indices of the predicting positions, the same for any prompt length:
    for a text of ``P + A`` tokens, ``-(A + 1) .. -2`` are ``P - 1 .. P + A - 2``."""
    return list(range(-answer_length - 1, -1))


def lookback_ratio(chunk_mass: np.ndarray, answer_mass: np.ndarray, context_tokens: int) -> np.ndarray:
    """Per head, the mean over answer steps ``t >= 1`` of ctx / (ctx + new) (see the module docstring).

    ``chunk_mass`` ``[layer, head, step, chunk]``, ``answer_mass`` ``[layer, head, step]`` (weight on
    the answer tokens before the predicted one: ``t`` tokens at step ``t``); returns ``[layer, head]``.
    """
    steps = chunk_mass.shape[2]
    if steps < 2:
        return np.full(chunk_mass.shape[:2], np.nan)
    t = np.arange(1, steps, dtype=np.float64)
    context = chunk_mass[:, :, 1:].astype(np.float64).sum(-1) / context_tokens
    new = answer_mass[:, :, 1:].astype(np.float64) / t
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = context / (context + new)  # NaN only where a head gives both groups exactly zero weight
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice" for such a head: NaN is right
        return np.nanmean(ratio, axis=-1)


def dummy_text(tokenizer: object, tokens: int) -> str:
    """:data:`DUMMY_SENTENCE` repeated word by word until it has ``tokens`` tokens (alone, no special
    tokens); it may overshoot by the pieces of one word."""
    words = DUMMY_SENTENCE.split()
    out: list[str] = []
    while True:
        out.append(words[len(out) % len(words)])
        text = " ".join(out)
        if len(tokenizer(text, add_special_tokens=False)["input_ids"]) >= tokens:  # type: ignore[operator]  # LoadedModel.tokenizer is typed as object (any fast tokenizer)
            return text


def flags(calibrated: np.ndarray, dummy: np.ndarray) -> list[str]:
    """Per chunk ``"ignored"`` when ``calibrated < IGNORED_BELOW * dummy``, else ``"attended"``."""
    return ["ignored" if c < IGNORED_BELOW * d else "attended" for c, d in zip(calibrated, dummy)]
