"""Explain a generation: for every generated token, where it looked in the prompt, beside what the
prompt's words did to it.

The model generates greedily, or samples with a seed, from a prompt (optionally in its chat
template). Then, for the whole sequence as generated (prompt + answer, exact ids):

- **attention**: the row of the position that predicted each generated token, the mean over the
  chosen layers and heads, summed over each prompt word's tokens: ``[generated, word]``, from one
  streamed capture of those rows only (never ``N x N``);
- **occlusion** (the causal side): each prompt word removed in turn, the answer teacher-forced
  after the shortened prompt; a word's score for token ``i`` is the drop of ``log p(token_i |
  prompt, token_<i)``: one forward per prompt word gives every generated token's drop at once;
- **agreement**: per generated token, Spearman's rank correlation of the two over the words.

Attention is correlation, not causation: the occlusion column is the causal check.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import spearmanr

from headmap.attribution.attention import DEFAULT_LAYERS
from headmap.capture import capture
from headmap.capture.encoding import Encoded, encode, encode_parts, pad_batch, pad_token_id
from headmap.errors import HeadmapError
from headmap.models import LoadedModel, load
from headmap.models.devices import input_device
from headmap.result import AttentionResult
from headmap.tokens import Tokens
from headmap.view.words import word_groups

#: Prompts longer than this many words would take a forward per word for the causal side.
MAX_OCCLUDED_WORDS = 512


@dataclass(frozen=True)
class GenerationSettings:
    """How to generate: ``max_new_tokens``; greedy unless ``temperature`` is given (then sampled with
    ``seed``); ``chat``: wrap the prompt in the tokenizer's chat template as one user turn."""

    max_new_tokens: int = 20
    temperature: float | None = None
    seed: int = 0
    chat: bool = False


@dataclass(frozen=True)
class GenerationTrace:
    """What :func:`explain_generation` measures (the report wraps it): the prompt's words, the
    generated tokens, ``attention`` and ``occlusion`` ``[generated, word]`` and ``logprobs``
    ``[generated]`` (each generated token's log-probability as generated)."""

    model: str
    prompt: Tokens
    words: tuple[str, ...]
    groups: tuple[tuple[int, ...], ...]
    generated: tuple[str, ...]
    generated_ids: tuple[int, ...]
    logprobs: np.ndarray
    attention: np.ndarray
    occlusion: np.ndarray | None
    layers: tuple[str, ...]
    heads: tuple[int, ...]
    settings: GenerationSettings

    @property
    def agreement(self) -> np.ndarray:
        """``[generated]`` Spearman of attention and occlusion over the words (NaN where undefined)."""
        if self.occlusion is None:
            return np.full(len(self.generated), np.nan)
        out = np.full(len(self.generated), np.nan)
        for i, (a, o) in enumerate(zip(self.attention, self.occlusion, strict=True)):
            ok = ~np.isnan(o)
            if ok.sum() >= 3 and np.ptp(a[ok]) > 0 and np.ptp(o[ok]) > 0:
                out[i] = float(spearmanr(a[ok], o[ok]).statistic)
        return out


def prompt_ids(loaded: LoadedModel, prompt: str, chat: bool) -> Encoded:
    """The prompt's exact ids: ``tokenizer(prompt)``, or its chat template with the generation prompt."""
    tokenizer = loaded.tokenizer
    if not prompt.strip():
        raise HeadmapError("the prompt is empty: give the text to continue")
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise HeadmapError(f"{loaded.name} has no chat template: leave out --chat")
        text = tokenizer.apply_chat_template(  # type: ignore[attr-defined]  # untyped tokenizer
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return encode_parts(tokenizer, [text])
    ids, tokens = encode(tokenizer, prompt)  # the text's own offsets: words as the prompt has them
    return Encoded(tuple(ids), tokens)


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """torch's global generator seeded for one call and restored after (generate samples from it)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def generate_ids(loaded: LoadedModel, prompt: Encoded, settings: GenerationSettings) -> list[int]:
    """The generated ids after ``prompt`` (stopping at the model's end-of-sequence token)."""
    model = loaded.model
    if getattr(model.config, "is_encoder_decoder", False) or not hasattr(model, "generate"):
        raise HeadmapError(f"{loaded.name} does not generate text: explain a decoder (e.g. smollm2)")
    if not getattr(model, "can_generate", lambda: False)():
        raise HeadmapError(f"{loaded.name} has no language-model head to generate with: use a decoder")
    if settings.max_new_tokens < 1:
        raise HeadmapError("max_new_tokens must be at least 1")
    ids = torch.tensor([prompt.ids], device=input_device(model))
    sample = settings.temperature is not None
    options: dict[str, object] = dict(
        max_new_tokens=settings.max_new_tokens,
        do_sample=sample,
        pad_token_id=pad_token_id(loaded.tokenizer),
        attention_mask=torch.ones_like(ids),
    )
    if sample:
        options.update(temperature=float(settings.temperature or 1.0), top_k=0, top_p=1.0)
    else:  # greedy: the model's own sampling defaults (generation_config) must not apply
        options.update(temperature=None, top_k=None, top_p=None)
    with torch.inference_mode(), _seeded(settings.seed):
        out = model.generate(ids, **options)  # type: ignore[operator]  # a transformers model
    return [int(i) for i in out[0, len(prompt.ids) :].tolist()]


def _logprobs(loaded: LoadedModel, sequences: Sequence[Sequence[int]], answers: Sequence[int]) -> np.ndarray:
    """``[sequence, answer]``: log p of each answer id, teacher-forced at the end of each sequence
    (each sequence ends with the answer)."""
    pad = pad_token_id(loaded.tokenizer)
    device = input_device(loaded.model)
    ids, mask, _ = pad_batch([list(s) for s in sequences], pad, "right")  # right: positions as alone
    with torch.inference_mode():
        logits = loaded.model(
            input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False
        ).logits
    g = len(answers)
    out = np.empty((len(sequences), g))
    wanted = torch.tensor(list(answers), device=logits.device)
    for b, seq in enumerate(sequences):
        start = len(seq) - g - 1  # the position that predicts the first answer token
        rows = torch.log_softmax(logits[b, start : start + g].float(), -1)
        out[b] = rows.gather(1, wanted[:, None])[:, 0].double().cpu().numpy()
    return out


def occlusion_drops(
    loaded: LoadedModel,
    prompt: Encoded,
    groups: Sequence[Sequence[int]],
    answer: Sequence[int],
    batch_size: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """``(logprobs [generated], drops [generated, word])``: each generated token's log-probability,
    and its drop when a prompt word's tokens are removed (NaN for special tokens' words, which frame
    the input, and for a removal that leaves no prompt)."""
    base = _logprobs(loaded, [list(prompt.ids) + list(answer)], answer)[0]
    drops = np.full((len(answer), len(groups)), np.nan)
    todo = []
    for w, group in enumerate(groups):
        if any(prompt.tokens.special[i] for i in group):
            continue
        kept = [t for i, t in enumerate(prompt.ids) if i not in set(group)]
        if kept:
            todo.append((w, kept + list(answer)))
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        found = _logprobs(loaded, [seq for _, seq in chunk], answer)
        for (w, _), values in zip(chunk, found, strict=True):
            drops[:, w] = base - values
    return base, drops


def _word(tokens: Tokens, group: Sequence[int]) -> str:
    """A word's text (its tokens' span of the prompt), or its first token's name (special tokens)."""
    return tokens.text[tokens.offsets[group[0]][0] : tokens.offsets[group[-1]][1]] or tokens.tokens[group[0]]


def attention_rows(result: AttentionResult, n_prompt: int, groups: Sequence[Sequence[int]]) -> np.ndarray:
    """``[generated, word]``: each predicting row's weights on the prompt's words, mean over the
    captured layers and heads (rows in the order captured: one per generated token)."""
    mean = np.mean([layer.weights.astype(np.float64).mean(0) for layer in result.layers], axis=0)
    prompt_part = mean[:, :n_prompt]  # [row, prompt token]
    return np.stack([prompt_part[:, list(g)].sum(1) for g in groups], axis=1)


def trace_generation(
    model: LoadedModel | str,
    prompt: str,
    *,
    settings: GenerationSettings | None = None,
    layers: Sequence[int | str] = DEFAULT_LAYERS,
    heads: Sequence[int] | None = None,
    occlusion: bool = True,
    batch_size: int = 8,
) -> GenerationTrace:
    """Generate from ``prompt`` and measure, per generated token, its attention to the prompt's
    words (``layers``/``heads``: mean over them; default every head of the last layer) and, with
    ``occlusion``, each word's causal effect on it. See the module docstring."""
    loaded = load(model) if isinstance(model, str) else model
    settings = settings or GenerationSettings()
    encoded = prompt_ids(loaded, prompt, settings.chat)
    answer = generate_ids(loaded, encoded, settings)
    if not answer:
        raise HeadmapError("the model generated nothing (it ended at once): try another prompt")
    groups = [tuple(g) for g in word_groups(encoded.tokens)]
    if occlusion and len(groups) > MAX_OCCLUDED_WORDS:
        raise HeadmapError(
            f"the prompt has {len(groups)} words: occluding each costs a forward; use occlusion=False "
            f"(--no-occlusion) above {MAX_OCCLUDED_WORDS}"
        )
    full = encode_parts(loaded.tokenizer, [list(encoded.ids), answer])
    n = len(encoded.ids)
    rows = list(range(n - 1, n - 1 + len(answer)))
    result = capture(
        loaded, full, layers=list(layers), heads=None if heads is None else list(heads), rows=rows
    )
    assert isinstance(result, AttentionResult)
    attention = attention_rows(result, n, groups)
    if occlusion:
        logprobs, drops = occlusion_drops(loaded, encoded, groups, answer, batch_size)
    else:
        logprobs, drops = _logprobs(loaded, [list(full.ids)], answer)[0], None
    tokenizer = loaded.tokenizer
    return GenerationTrace(
        model=loaded.name,
        prompt=encoded.tokens,
        words=tuple(_word(encoded.tokens, g) for g in groups),
        groups=tuple(groups),
        generated=tuple(tokenizer.decode([i]) for i in answer),  # type: ignore[attr-defined]  # untyped tokenizer
        generated_ids=tuple(answer),
        logprobs=logprobs,
        attention=attention,
        occlusion=drops,
        layers=tuple(layer.key.name for layer in result.layers),
        heads=tuple(result.layers[0].heads),
        settings=settings,
    )
