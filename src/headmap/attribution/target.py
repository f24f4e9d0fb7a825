"""The explained output: one scalar per input variant, the same for every attribution method.

- :class:`TokenLogProb` (decoders, and encoders with an MLM head): the log-probability of one
  target token at one position: the next token after ``position`` for causal models, the token at
  a ``[MASK]`` for masked models.
- :class:`Cosine` (any model, the only choice for encoders without an LM head such as MiniLM):
  the cosine similarity between the text's mean-pooled last hidden state and that of a compare text.
- :class:`Custom`: any scalar function of the model's output.

Every method evaluates a target on :class:`ModelInputs`: a right-padded batch of variants of the
text (IG's interpolation steps, occlusion's shortened texts), each with its own explained position,
because removing tokens before it moves it.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from headmap.capture.discovery import discover, forward_module
from headmap.capture.encoding import encode
from headmap.errors import HeadmapError, check_index
from headmap.models import LoadedModel
from headmap.models.devices import input_device
from headmap.tokens import Tokens


@dataclass(frozen=True)
class ModelInputs:
    """Right-padded variants of one text: ``ids`` and ``mask`` ``[batch, token]``, ``position`` ``[batch]``.

    ``embeds`` ``[batch, token, hidden]``, when set, are the input embeddings to run on instead of
    looking ``ids`` up (gradient methods interpolate them).
    """

    ids: torch.Tensor
    mask: torch.Tensor
    position: torch.Tensor
    embeds: torch.Tensor | None = None

    def model_kwargs(self) -> dict[str, torch.Tensor]:
        """``input_ids`` or ``inputs_embeds``, and the attention mask, for the model's forward."""
        first = {"input_ids": self.ids} if self.embeds is None else {"inputs_embeds": self.embeds}
        return {**first, "attention_mask": self.mask}


def single(ids: list[int] | tuple[int, ...], position: int) -> ModelInputs:
    """The text itself as a batch of one."""
    tensor = torch.tensor([list(ids)], dtype=torch.long)
    return ModelInputs(tensor, torch.ones_like(tensor), torch.tensor([position], dtype=torch.long))


def model_kind(model: torch.nn.Module) -> str:
    """``"causal"``, ``"masked"``, ``"encoder"`` (no LM head) or ``"seq2seq"``, from the model class."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if getattr(model.config, "is_encoder_decoder", False):
        return "seq2seq"
    name = type(model).__name__

    def names(mapping: dict) -> set[str]:
        out: set[str] = set()
        for value in mapping.values():
            out.update(value if isinstance(value, (list, tuple)) else [value])
        return out

    if name in names(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES) or name.endswith(("ForCausalLM", "LMHeadModel")):
        return "causal"
    if name in names(MODEL_FOR_MASKED_LM_MAPPING_NAMES) or name.endswith("ForMaskedLM"):
        return "masked"
    return "encoder"


@dataclass(frozen=True, eq=False)
class Target(ABC):
    """What is explained. ``position`` is the explained token (None: the output pools every token)."""

    position: int | None
    causal: bool

    @property
    @abstractmethod
    def kind(self) -> str:
        """``next-token``, ``masked-token``, ``cosine`` or ``custom``."""

    @property
    @abstractmethod
    def description(self) -> str:
        """One line saying what the number is (untrusted parts included: escape before HTML)."""

    @abstractmethod
    def score(self, model: torch.nn.Module, inputs: ModelInputs) -> torch.Tensor:
        """The explained scalar of every variant, ``[batch]``, differentiable."""

    def query_weights(self, n: int) -> np.ndarray:
        """``[token]`` weights of the query rows that attention, rollout and flow read (sum 1).

        The explained position's row, or the mean of all rows when the output pools every token.
        """
        if self.position is None:
            return np.full(n, 1.0 / n)
        weights = np.zeros(n)
        weights[self.position] = 1.0
        return weights

    def visible(self, n: int) -> np.ndarray:
        """``[token]`` True where the output can depend on the token (causal: up to the position)."""
        seen = np.ones(n, dtype=bool)
        if self.causal and self.position is not None:
            seen[self.position + 1 :] = False
        return seen

    def evaluate(self, model: torch.nn.Module, inputs: ModelInputs) -> torch.Tensor:
        """The number to report for every variant, ``[batch]`` float64, without gradients.

        :meth:`score` by default; targets whose float32 score loses digits override it.
        """
        with torch.inference_mode():
            return self.score(model, inputs).double()

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "description": self.description, "position": self.position}


def _logits_at(model: torch.nn.Module, inputs: ModelInputs) -> torch.Tensor:
    """``[batch, vocab]`` logits at each variant's position.

    Causal models that accept ``logits_to_keep`` compute the LM head only over the last positions
    needed (the head is ``tokens x vocabulary`` floats, the largest tensor of a small model).
    """
    kwargs: dict[str, object] = dict(inputs.model_kwargs())
    start = 0
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        start = int(inputs.position.min())
        kwargs["logits_to_keep"] = inputs.ids.shape[1] - start
    logits = model(**kwargs, use_cache=False).logits
    rows = torch.arange(inputs.ids.shape[0], device=logits.device)
    return logits[rows, inputs.position.to(logits.device) - start]


@dataclass(frozen=True, eq=False)
class TokenLogProb(Target):
    """log p(token) at ``position``: the next token after it (causal) or the token at a [MASK] (masked)."""

    token_id: int = 0
    token: str = ""

    @property
    def kind(self) -> str:
        return "next-token" if self.causal else "masked-token"

    @property
    def description(self) -> str:
        where = f"after token {self.position}" if self.causal else f"at the [MASK] (token {self.position})"
        return f"log p({self.token!r}) {where}"

    def score(self, model: torch.nn.Module, inputs: ModelInputs) -> torch.Tensor:
        return torch.log_softmax(_logits_at(model, inputs).float(), dim=-1)[:, self.token_id]

    def evaluate(self, model: torch.nn.Module, inputs: ModelInputs) -> torch.Tensor:
        # The log-softmax in float64: in float32 it is off by ~1.5e-5 nats over SmolLM2's 49k vocabulary.
        with torch.inference_mode():
            return torch.log_softmax(_logits_at(model, inputs).double(), dim=-1)[:, self.token_id]

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "token_id": self.token_id, "token": self.token}


def mean_pooled(model: torch.nn.Module, inputs: ModelInputs) -> torch.Tensor:
    """``[batch, hidden]``: the last hidden state averaged over each variant's real tokens
    (sentence-transformers' mean pooling, special tokens included)."""
    hidden = forward_module(model)(**inputs.model_kwargs(), use_cache=False).last_hidden_state
    weights = inputs.mask.to(hidden.device, hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1)


@dataclass(frozen=True, eq=False)
class Cosine(Target):
    """cos(mean-pooled embedding of the text, mean-pooled embedding of ``compare``)."""

    compare: str = ""
    compare_vector: torch.Tensor = field(default_factory=lambda: torch.zeros(0), repr=False)

    @property
    def kind(self) -> str:
        return "cosine"

    @property
    def description(self) -> str:
        return f"cosine similarity of the mean-pooled embedding with that of {self.compare!r}"

    def score(self, model: torch.nn.Module, inputs: ModelInputs) -> torch.Tensor:
        pooled = mean_pooled(model, inputs).float()
        return torch.nn.functional.cosine_similarity(
            pooled, self.compare_vector.to(pooled.device)[None], dim=-1
        )

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "compare": self.compare}


#: A user's explained output: the model's output and the inputs it ran on -> ``[batch]``.
ScoreFunction = Callable[[object, ModelInputs], torch.Tensor]


@dataclass(frozen=True, eq=False)
class Custom(Target):
    """Any scalar function ``fn(output, inputs) -> [batch]`` of the model's output on ``inputs``."""

    fn: ScoreFunction | None = None
    name: str = "custom"

    @property
    def kind(self) -> str:
        return "custom"

    @property
    def description(self) -> str:
        return f"{self.name} (a user function of the model output)"

    def score(self, model: torch.nn.Module, inputs: ModelInputs) -> torch.Tensor:
        assert self.fn is not None
        out = self.fn(model(**inputs.model_kwargs()), inputs)
        if not isinstance(out, torch.Tensor):
            raise HeadmapError(f"the target function returned {type(out).__name__}: return a tensor [batch]")
        batch = inputs.ids.shape[0]
        if out.ndim == 0 and batch == 1:
            out = out[None]
        if out.shape != (batch,):
            raise HeadmapError(
                f"the target function returned shape {tuple(out.shape)}: return one number per variant, "
                f"shape ({batch},) (the function gets a batch of variants of the text)"
            )
        return out.float()


def encode_text(loaded: LoadedModel, text: str) -> tuple[list[int], Tokens]:
    """Token ids and :class:`~headmap.tokens.Tokens` exactly as capture sees the text."""

    limit = loaded.max_positions
    if limit is not None:
        limit -= discover(loaded.model).position_offset or 0
    return encode(loaded.tokenizer, text, limit)


def _single_token(loaded: LoadedModel, token: str | int) -> tuple[int, str]:
    tokenizer = loaded.tokenizer
    if isinstance(token, (int, np.integer)):
        vocab = len(tokenizer)  # type: ignore[arg-type]  # LoadedModel.tokenizer is typed as object (any fast tokenizer)
        if not 0 <= int(token) < vocab:
            raise HeadmapError(f"target token id {token} is out of range: the vocabulary has {vocab} ids")
        return int(token), tokenizer.decode([int(token)])  # type: ignore[attr-defined]  # LoadedModel.tokenizer is typed as object (any fast tokenizer)
    if not token:
        raise HeadmapError("the target token is empty: give one token such as ' big'")
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]  # type: ignore[operator]  # LoadedModel.tokenizer is typed as object (any fast tokenizer)
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)  # type: ignore[attr-defined]  # LoadedModel.tokenizer is typed as object (any fast tokenizer)
        raise HeadmapError(
            f"the target {token!r} is {len(ids)} tokens {pieces} for this tokenizer: explain one token, "
            f"e.g. its first piece {tokenizer.decode(ids[:1])!r} (mind the leading space of GPT-style tokenizers)"  # type: ignore[attr-defined]  # LoadedModel.tokenizer is typed as object (any fast tokenizer)
        )
    return int(ids[0]), tokenizer.decode(ids)  # type: ignore[attr-defined]  # LoadedModel.tokenizer is typed as object (any fast tokenizer)


def _top_token(loaded: LoadedModel, ids: list[int], position: int) -> tuple[int, str]:
    with torch.inference_mode():
        inputs = single(ids, position)
        device = input_device(loaded.model)
        logits = _logits_at(
            loaded.model, ModelInputs(inputs.ids.to(device), inputs.mask.to(device), inputs.position)
        )
    top = int(logits[0].argmax())
    return top, loaded.tokenizer.decode([top])  # type: ignore[attr-defined]  # LoadedModel.tokenizer is typed as object (any fast tokenizer)


def resolve_target(
    loaded: LoadedModel,
    ids: list[int],
    target: str | int | ScoreFunction | None = None,
    compare: str | None = None,
    position: int | None = None,
) -> Target:
    """The explained output for ``ids`` on ``loaded``, checked against what the model can give.

    ``target``: a token (string or id) whose log-probability is explained (default: the model's
    top token), or a function ``fn(output, inputs) -> [batch]``. ``compare``: a text whose
    embedding the cosine is taken with. ``position``: the explained token (causal: the next token
    after it; masked: a [MASK]); default the last token, or the first [MASK].
    """
    kind = model_kind(loaded.model)
    name = type(loaded.model).__name__
    if kind == "seq2seq":
        raise HeadmapError(
            f"{loaded.name} ({name}) is an encoder-decoder model: explain supports encoder-only and "
            "decoder-only models; use capture for its attention maps"
        )
    n = len(ids)
    causal = kind == "causal"
    if position is not None:
        position = check_index(int(position), n, "position")
    if callable(target):
        if compare is not None:
            raise HeadmapError("give either a target function or a compare text, not both")
        where = position if position is not None else (n - 1 if causal else None)
        return Custom(position=where, causal=causal, fn=target, name=getattr(target, "__name__", "custom"))
    if compare is not None:
        if target is not None:
            raise HeadmapError(
                "give either a target token or a compare text, not both: "
                "the target token is for language models, compare for the embedding cosine"
            )
        compare_ids, _ = encode_text(loaded, compare)
        with torch.inference_mode():
            device = input_device(loaded.model)
            batch = torch.tensor([compare_ids], device=device)
            one = ModelInputs(
                batch, torch.ones_like(batch), torch.tensor([len(compare_ids) - 1], device=device)
            )
            vector = mean_pooled(loaded.model, one)[0].float().cpu()
        return Cosine(position=None, causal=causal, compare=compare, compare_vector=vector)
    if kind == "encoder":
        raise HeadmapError(
            f"{loaded.name} ({name}) has no language-model head, so it gives no token probabilities: "
            "pass compare=TEXT (--compare TEXT) to explain the cosine similarity of its mean-pooled "
            "embedding with that of another text"
        )
    if kind == "masked":
        mask_id = getattr(loaded.tokenizer, "mask_token_id", None)
        masks = [i for i, t in enumerate(ids) if t == mask_id]
        mask_text = getattr(loaded.tokenizer, "mask_token", "[MASK]")
        if not masks:
            raise HeadmapError(
                f"{loaded.name} is a masked language model: put {mask_text} in the text where "
                "the token to explain goes, or pass compare=TEXT"
            )
        if position is None:
            position = masks[0]
        elif position not in masks:
            raise HeadmapError(
                f"token {position} is not a {mask_text}: the {mask_text} tokens are at {masks}"
            )
    elif position is None:
        position = n - 1
    token_id, token = _top_token(loaded, ids, position) if target is None else _single_token(loaded, target)
    return TokenLogProb(position=position, causal=causal, token_id=token_id, token=token)
