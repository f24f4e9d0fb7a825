"""How good a (gated or cut) model still is, on held-out text, and the encoders' importance loss.

- **Decoders** (a causal LM head): held-out perplexity, teacher-forced and exact: every text is run
  as the tokenizer encodes it, every token after the first is scored given the ones before it, and
  perplexity is ``exp(sum of -log p / number of scored tokens)`` over the whole held-out set.
- **Sentence encoders** (no LM head, such as all-MiniLM-L6-v2): embeddings are mean-pooled over each
  text's tokens (how sentence-transformers pools MiniLM); quality is the mean cosine between each
  text's pruned and unpruned embedding, and the Spearman correlation between all pairwise cosine
  similarities of the held-out texts before and after (does the pruned model still rank pairs the
  same way?). The Spearman is the primary metric.

Encoders have no loss of their own for head importance, and ``1 - cosine`` to the unpruned embedding
has zero gradient at the unpruned model (it is at its minimum there). :func:`retrieval_loss` instead
asks each text's embedding to find its own unpruned embedding among the unpruned embeddings of the
whole corpus (softmax cross-entropy over cosines times 20, the scale of sentence-transformers'
``MultipleNegativesRankingLoss``), which has a gradient from the first step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from headmap.analysis.losses import Loss
from headmap.capture.discovery import forward_module
from headmap.capture.encoding import encode, pad_batch, pad_token_id
from headmap.errors import HeadmapError
from headmap.models import LoadedModel
from headmap.models.devices import input_device

RETRIEVAL_SCALE = 20.0


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    higher_is_better: bool


PERPLEXITY = Metric("perplexity", "held-out perplexity", higher_is_better=False)
SPEARMAN = Metric("spearman", "Spearman of pairwise similarities", higher_is_better=True)
COSINE = Metric("mean_cosine", "mean cosine to unpruned embedding", higher_is_better=True)


def is_causal_lm(model: torch.nn.Module) -> bool:
    from transformers.models.auto import modeling_auto

    names: set[str] = set()
    for value in modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        names.update([value] if isinstance(value, str) else value)
    return type(model).__name__ in names


def _batches(loaded: LoadedModel, texts: Sequence[str], batch_size: int):
    """``(input_ids, attention_mask)`` per batch of texts, right-padded, on the model's device."""
    device = input_device(loaded.model)
    limit = loaded.max_positions
    pad = pad_token_id(loaded.tokenizer)
    for first in range(0, len(texts), max(1, batch_size)):
        ids, mask, _ = pad_batch(
            [encode(loaded.tokenizer, t, limit)[0] for t in texts[first : first + batch_size]], pad, "right"
        )
        yield ids.to(device), mask.to(device)


def token_nll(loaded: LoadedModel, texts: Sequence[str], batch_size: int = 16) -> tuple[float, int]:
    """``(sum of -log p of every token after each text's first, number of such tokens)``, float64 sum."""
    total, count = 0.0, 0
    with torch.inference_mode():
        for ids, mask in _batches(loaded, texts, batch_size):
            logits = loaded.model(
                input_ids=ids, attention_mask=mask, use_cache=False
            ).logits  # [batch, token, vocab]
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
            valid = (mask[:, 1:] * mask[:, :-1]).bool()
            total -= float(logp[valid].double().sum())
            count += int(valid.sum())
    return total, count


def perplexity(loaded: LoadedModel, texts: Sequence[str], batch_size: int = 16) -> float:
    total, count = token_nll(loaded, texts, batch_size)
    if count == 0:
        raise HeadmapError("the held-out texts have no token to predict: give texts of two tokens or more")
    return math.exp(total / count)


def embeddings(loaded: LoadedModel, texts: Sequence[str], batch_size: int = 16) -> torch.Tensor:
    """``[text, dim]`` float64: the last hidden state averaged over each text's tokens."""
    out = []
    base = forward_module(loaded.model)
    with torch.inference_mode():
        for ids, mask in _batches(loaded, texts, batch_size):
            hidden = base(
                input_ids=ids, attention_mask=mask
            ).last_hidden_state.double()  # [batch, token, dim]
            weights = mask[..., None].double()
            out.append((hidden * weights).sum(1) / weights.sum(1))
    return torch.cat(out).cpu()


def _cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T


def embedding_quality(pruned: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Mean cosine of matching rows, and the Spearman of the pairwise cosines (``i < j``) of both sets."""
    from scipy.stats import spearmanr

    if len(reference) < 3:
        raise HeadmapError("the Spearman of pairwise similarities needs at least 3 held-out texts")
    same = torch.nn.functional.cosine_similarity(pruned, reference, dim=-1)
    upper = torch.triu_indices(len(reference), len(reference), offset=1)
    pairs_pruned = _cosines(pruned, pruned)[upper[0], upper[1]].numpy()
    pairs_reference = _cosines(reference, reference)[upper[0], upper[1]].numpy()
    return {
        "spearman": float(spearmanr(pairs_pruned, pairs_reference).statistic),
        "mean_cosine": float(same.mean()),
    }


class Quality:
    """Measures a model on held-out texts: call :meth:`measure` (inside ``headmap.ablate`` to gate heads).

    For encoders, the unpruned embeddings are computed once, when this is made (outside any ablation).
    """

    def __init__(self, loaded: LoadedModel, texts: Sequence[str], batch_size: int = 16) -> None:
        if not texts:
            raise HeadmapError("no held-out texts: give at least one")
        self.loaded, self.texts, self.batch_size = loaded, list(texts), batch_size
        self.decoder = is_causal_lm(loaded.model)
        self.metrics = (PERPLEXITY,) if self.decoder else (SPEARMAN, COSINE)
        self.reference = None if self.decoder else embeddings(loaded, self.texts, batch_size)

    @property
    def primary(self) -> Metric:
        return self.metrics[0]

    def measure(self, loaded: LoadedModel | None = None) -> dict[str, float]:
        """The metrics of ``loaded`` (default: the model this was made for, as it runs now)."""
        model = loaded or self.loaded
        if self.decoder:
            return {"perplexity": perplexity(model, self.texts, self.batch_size)}
        assert self.reference is not None
        return embedding_quality(embeddings(model, self.texts, self.batch_size), self.reference)


def retrieval_loss(loaded: LoadedModel, texts: Sequence[str], batch_size: int = 16):
    """The encoders' importance loss (see the module docstring), one value per text of a batch."""

    reference = torch.nn.functional.normalize(embeddings(loaded, texts, batch_size), dim=-1).float()
    limit = loaded.max_positions
    index: dict[tuple[int, ...], int] = {}
    for i, text in enumerate(texts):
        index.setdefault(tuple(encode(loaded.tokenizer, text, limit)[0]), i)

    def compute(output: object, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = output.last_hidden_state  # type: ignore[attr-defined]  # [batch, token, dim]
        mask = inputs["attention_mask"]
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        targets = []
        for row, row_mask in zip(inputs["input_ids"], mask):
            key = tuple(int(i) for i in row[row_mask.bool()])
            if key not in index:
                raise HeadmapError("the retrieval loss got a text outside the corpus it was made for")
            targets.append(index[key])
        logits = RETRIEVAL_SCALE * torch.nn.functional.normalize(pooled, dim=-1) @ reference.to(pooled).T
        target = torch.tensor(targets, device=logits.device)
        return torch.nn.functional.cross_entropy(logits, target, reduction="none")

    return Loss(
        f"self-retrieval cross-entropy among {len(texts)} unpruned embeddings (scale {RETRIEVAL_SCALE:g})",
        compute,
    )


__all__ = [
    "COSINE",
    "PERPLEXITY",
    "RETRIEVAL_SCALE",
    "SPEARMAN",
    "Metric",
    "Quality",
    "embedding_quality",
    "embeddings",
    "is_causal_lm",
    "perplexity",
    "retrieval_loss",
    "token_nll",
]
