"""Per-text losses for head importance: next-token cross-entropy, masked-LM loss, or the user's own.

Every loss returns one value per text of the batch (``[batch]``): importance needs each text's
gradient, and the texts of a batch must not depend on each other for that to hold (true of any
transformer forward; a user function must keep it so, e.g. no loss mixing two texts).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from headmap.errors import HeadmapError
from headmap.tokens import Tokens

#: A user loss: ``fn(output, inputs) -> Tensor [batch]`` from the model's output and its inputs.
LossFn = Callable[[object, dict[str, torch.Tensor]], torch.Tensor]
MLM_RATE = 0.15


@dataclass(frozen=True)
class Loss:
    """A loss with its name (kept with resumable results) and how it changes the inputs, if at all."""

    name: str
    compute: LossFn
    masks_tokens: bool = False  # True: the masked-LM loss masks tokens before the forward
    min_tokens: int = 1  # shorter texts have no loss (one token has no next token)

    def prepare(
        self, inputs: dict[str, torch.Tensor], tokens: Sequence[Tokens], mask_id: int | None
    ) -> dict[str, torch.Tensor]:
        if not self.masks_tokens:
            return inputs
        return mask_inputs(inputs, tokens, mask_id)


def next_token_loss(output: object, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of each next token given the ones before it, per text ``[batch]``."""
    logits = output.logits  # type: ignore[attr-defined]  # [batch, token, vocab]
    ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()
    targets = ids[:, 1:]
    valid = mask[:, 1:] & mask[:, :-1]
    ce = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2), targets, reduction="none"
    )  # [batch, token-1]
    return (ce * valid).sum(1) / valid.sum(1).clamp(min=1)


def masked_lm_loss(output: object, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy at the masked positions (``inputs["labels"]``, -100 elsewhere), per text."""
    logits = output.logits  # type: ignore[attr-defined]  # a transformers ModelOutput; its stubs have no logits field
    labels = inputs["labels"]
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
    valid = labels >= 0
    return (ce * valid).sum(1) / valid.sum(1).clamp(min=1)


def masked_positions(tokens: Tokens, rate: float = MLM_RATE) -> list[int]:
    """Which tokens the masked-LM loss masks: ``max(1, round(rate * n))`` of the ``n`` non-special
    tokens, drawn by a generator seeded from the text itself, so a text gets the same mask in any
    batch, run or process."""
    plain = [i for i, s in enumerate(tokens.special) if not s]
    if not plain:
        raise HeadmapError("a text has only special tokens: the masked-LM loss needs a word to mask")
    count = max(1, round(rate * len(plain)))
    seed = int(hashlib.sha256(tokens.text.encode("utf-8")).hexdigest()[:15], 16)
    order = torch.randperm(len(plain), generator=torch.Generator().manual_seed(seed))
    return sorted(plain[int(i)] for i in order[:count])


def mask_inputs(
    inputs: dict[str, torch.Tensor], tokens: Sequence[Tokens], mask_id: int | None
) -> dict[str, torch.Tensor]:
    if mask_id is None:
        raise HeadmapError("the tokenizer has no mask token: the masked-LM loss cannot be used; pass loss=")
    ids = inputs["input_ids"].clone()
    labels = torch.full_like(ids, -100)
    for b, toks in enumerate(tokens):
        picked = torch.tensor(masked_positions(toks), dtype=torch.long)
        labels[b, picked] = ids[b, picked]
        ids[b, picked] = mask_id
    return {**inputs, "input_ids": ids, "labels": labels}


def _class_names(mapping_name: str) -> set[str]:
    from transformers.models.auto import modeling_auto

    names: set[str] = set()
    for value in getattr(modeling_auto, mapping_name, {}).values():
        names.update([value] if isinstance(value, str) else value)
    return names


def default_loss(model: torch.nn.Module) -> Loss:
    """Next-token cross-entropy for decoders, the masked-LM loss where the model has an MLM head."""
    name = type(model).__name__
    if getattr(model.config, "is_encoder_decoder", False):
        raise HeadmapError(
            f"{name} is an encoder-decoder model: pass loss=function(output, inputs) returning one "
            "loss per text (headmap's default losses are for decoders and masked-LM encoders)"
        )
    if name in _class_names("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"):
        return Loss("next-token cross-entropy", next_token_loss, min_tokens=2)
    if name in _class_names("MODEL_FOR_MASKED_LM_MAPPING_NAMES"):
        return Loss(
            f"masked-LM cross-entropy ({MLM_RATE:.0%} of tokens masked)", masked_lm_loss, masks_tokens=True
        )
    raise HeadmapError(
        f"{name} has no language-model head (a sentence encoder such as all-MiniLM-L6-v2 outputs embeddings): "
        "pass loss=function(output, inputs) returning one loss per text, e.g. 1 - cosine similarity of the "
        "mean-pooled embedding to a reference embedding"
    )


def resolve_loss(model: torch.nn.Module, loss: str | LossFn | Loss | None) -> Loss:
    if loss is None:
        return default_loss(model)
    if isinstance(loss, Loss):
        return loss
    if loss in ("causal", "next-token"):
        return Loss("next-token cross-entropy", next_token_loss, min_tokens=2)
    if loss in ("mlm", "masked-lm"):
        return Loss(
            f"masked-LM cross-entropy ({MLM_RATE:.0%} of tokens masked)", masked_lm_loss, masks_tokens=True
        )
    if callable(loss):
        return Loss(f"user function {getattr(loss, '__qualname__', type(loss).__name__)}", loss)
    raise HeadmapError(
        f"unknown loss {loss!r}: use 'causal', 'mlm' or a function(output, inputs) -> one loss per text"
    )


__all__ = [
    "Loss",
    "LossFn",
    "default_loss",
    "masked_lm_loss",
    "masked_positions",
    "next_token_loss",
    "resolve_loss",
]
