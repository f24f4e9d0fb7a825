"""What every attribution method shares: the explained problem, the result of one method, and
the one ``attribute(problem) -> Attribution`` shape (as captum's ``attribute``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from headmap.attribution.target import ModelInputs, Target, single
from headmap.models import LoadedModel
from headmap.models.devices import input_device
from headmap.tokens import Tokens


@dataclass(frozen=True, eq=False)
class Problem:
    """A text on a model, the explained output, and its word axis.

    ``ids`` are the token ids exactly as ``tokenizer(text)`` gives them (what capture runs), and
    ``groups`` the tokens of each word (:func:`headmap.view.words.word_groups`).
    """

    loaded: LoadedModel
    ids: tuple[int, ...]
    tokens: Tokens
    target: Target
    groups: tuple[tuple[int, ...], ...]

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def position(self) -> int:
        """The explained token; the last one when the output pools every token (then unused)."""
        return self.target.position if self.target.position is not None else self.n - 1

    @property
    def device(self) -> torch.device:
        """Where the model takes its inputs (:func:`headmap.models.input_device`)."""
        return input_device(self.loaded.model)

    def inputs(self) -> ModelInputs:
        """The text itself as a batch of one, on the model's device."""
        one = single(self.ids, self.position)
        return ModelInputs(one.ids.to(self.device), one.mask.to(self.device), one.position.to(self.device))

    def output(self) -> float:
        """F(x): the explained output on the text, as the model computes it."""
        with torch.inference_mode():
            return float(self.target.score(self.loaded.model, self.inputs())[0])


@dataclass(frozen=True)
class Attribution:
    """One method's scores. ``tokens`` is ``[token]``; ``words`` is ``[word]`` when the method
    measures words itself (occlusion removes a whole word), else None (words sum their tokens).
    ``signed``: whether scores may be negative (gradient and causal methods) or not (attention).
    ``info`` holds what the method reports about itself (IG's delta and steps, the layers used)."""

    method: str
    tokens: np.ndarray
    signed: bool
    words: np.ndarray | None = None
    info: dict[str, object] = field(default_factory=dict)


class Method(Protocol):
    """An attribution method: ``attribute(problem)`` gives one score per input token."""

    @property
    def name(self) -> str: ...  # a property: the methods are frozen dataclasses

    def attribute(self, problem: Problem) -> Attribution: ...


def sum_words(scores: np.ndarray, groups: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """``[token] -> [word]``: the sum over each word's tokens (words are contiguous runs of tokens)."""
    starts = np.array([g[0] for g in groups], dtype=np.int64)
    return np.add.reduceat(np.asarray(scores, dtype=np.float64), starts)
