"""The RAG prompt: the question and the numbered chunks, in the model's chat template when it has one.

Layout of the user message (and of the whole prompt for tokenizers without a chat template)::

    Answer the question using the numbered documents below.

    [1] <chunk 1>

    [2] <chunk 2>

    Question: <question>

With a chat template the message goes through ``tokenizer.apply_chat_template(...,
add_generation_prompt=True)`` (the template's own default system prompt included, as a user's
pipeline would get it). Without one the prompt is that text followed by ``"\\nAnswer:\\n"``, after
the tokenizer's BOS token when ``tokenizer(text)`` would add one. A chunk's tokens are the prompt
tokens whose characters overlap the chunk's text; its ``[k]`` label is not part of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from headmap.apps.chat import has_chat_template
from headmap.capture import Encoded, encode_parts
from headmap.errors import HeadmapError
from headmap.models import LoadedModel
from headmap.models.devices import input_device

INSTRUCTION = "Answer the question using the numbered documents below."
PLAIN_ANSWER_CUE = "\nAnswer:\n"


@dataclass(frozen=True)
class RagPrompt:
    """An exact prompt: its text, its token ids and where each chunk lies in both."""

    text: str
    encoded: Encoded
    chunk_chars: tuple[tuple[int, int], ...]
    """``(start, end)`` character span of each chunk's text in ``text``."""
    chunk_tokens: tuple[tuple[int, int], ...]
    """``(first, stop)`` token range of each chunk (tokens overlapping its characters)."""

    @property
    def ids(self) -> list[int]:
        return list(self.encoded.ids)

    def __len__(self) -> int:
        return len(self.encoded.ids)


def user_message(question: str, texts: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """The message text and each chunk's character span in it (chunks numbered from 1, in order)."""
    parts = [INSTRUCTION]
    spans = []
    position = len(INSTRUCTION)
    for number, text in enumerate(texts, start=1):
        label = f"\n\n[{number}] "
        parts.append(label + text)
        spans.append((position + len(label), position + len(label) + len(text)))
        position += len(label) + len(text)
    parts.append(f"\n\nQuestion: {question}")
    return "".join(parts), spans


def build_prompt(tokenizer: object, question: str, texts: Sequence[str]) -> RagPrompt:
    """The exact prompt for ``question`` over the chunk ``texts``, tokenized (see the module docstring)."""
    if not question.strip():
        raise HeadmapError("the question is empty: give the question the chunks should answer")
    message, spans = user_message(question, texts)
    if has_chat_template(tokenizer):
        text = tokenizer.apply_chat_template(  # type: ignore[attr-defined]  # LoadedModel.tokenizer is typed as object (any fast tokenizer)
            [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
        )
        start = text.rfind(message)
        if start < 0:
            raise HeadmapError(
                "the model's chat template rewrites the user message, so the chunks cannot be "
                "located in the prompt: use a model whose template keeps the message as given"
            )
    else:
        prefix = _bos_text(tokenizer)
        text, start = prefix + message + PLAIN_ANSWER_CUE, len(prefix)
    chars = tuple((start + a, start + b) for a, b in spans)
    encoded = encode_parts(tokenizer, [text])
    return RagPrompt(text=text, encoded=encoded, chunk_chars=chars, chunk_tokens=token_ranges(encoded, chars))


def _bos_text(tokenizer: object) -> str:
    """The BOS token's text when ``tokenizer(text)`` starts with it (Llama-style), else ``""``."""
    bos_id = getattr(tokenizer, "bos_token_id", None)
    bos = getattr(tokenizer, "bos_token", None)
    if bos_id is None or not bos:
        return ""
    ids = tokenizer("a")["input_ids"]  # type: ignore[operator]  # LoadedModel.tokenizer is typed as object (any fast tokenizer)
    return str(bos) if ids and ids[0] == bos_id else ""


def token_ranges(encoded: Encoded, chars: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Per character span, the ``(first, stop)`` range of non-special tokens overlapping it."""
    offsets, special = encoded.tokens.offsets, encoded.tokens.special
    ranges = []
    for number, (start, end) in enumerate(chars, start=1):
        inside = [i for i, (a, b) in enumerate(offsets) if not special[i] and a < end and b > start]
        if not inside:
            raise HeadmapError(f"chunk {number} has no tokens of its own in the prompt")
        ranges.append((inside[0], inside[-1] + 1))
    return tuple(ranges)


def with_answer(prompt: RagPrompt, answer_ids: Sequence[int], tokenizer: object) -> Encoded:
    """The prompt followed by the answer ids, exactly: what the teacher-forced passes see."""
    return encode_parts(tokenizer, [prompt.text, list(answer_ids)])


def encode_answer(tokenizer: object, answer: str) -> list[int]:
    """A given answer's ids: tokenized on its own, without special tokens."""
    if not answer.strip():
        raise HeadmapError(
            "the answer is empty: give the answer text to check, or leave it out to generate one"
        )
    return list(tokenizer(answer, add_special_tokens=False)["input_ids"])  # type: ignore[operator]  # LoadedModel.tokenizer is typed as object (any fast tokenizer)


def check_causal_lm(loaded: LoadedModel) -> None:
    """RAG generates or scores text after a prompt: only decoder-only language models do that."""
    model = loaded.model
    can_generate = getattr(model, "can_generate", None)
    if loaded.is_encoder_decoder or not callable(can_generate) or not can_generate():
        raise HeadmapError(
            f"{loaded.name} is not a causal language model (an encoder or encoder-decoder without "
            "a text-generating head): RAG needs a decoder-only LM such as smollm2"
        )


def stop_ids(loaded: LoadedModel) -> set[int]:
    """Token ids that end an answer: the generation config's EOS ids and the tokenizer's."""
    found: set[int] = set()
    for value in (
        getattr(getattr(loaded.model, "generation_config", None), "eos_token_id", None),
        getattr(loaded.tokenizer, "eos_token_id", None),
    ):
        if isinstance(value, int):
            found.add(value)
        elif isinstance(value, (list, tuple)):
            found.update(int(v) for v in value)
    return found


def generate_answer(loaded: LoadedModel, prompt: RagPrompt, max_new_tokens: int) -> tuple[list[int], bool]:
    """Greedy answer ids after the prompt (up to the first EOS, which is not kept), and whether the
    ``max_new_tokens`` limit cut it off."""
    if max_new_tokens < 1:
        raise HeadmapError(f"--max-new-tokens must be at least 1, not {max_new_tokens}")
    stops = stop_ids(loaded)
    device = input_device(loaded.model)
    ids = torch.tensor([prompt.ids], device=device)
    pad = next(iter(sorted(stops)), None) if getattr(loaded.tokenizer, "pad_token_id", None) is None else None
    extra = {"pad_token_id": pad} if pad is not None else {}
    with torch.inference_mode():
        out = loaded.model.generate(  # type: ignore[operator]  # transformers' stubs type generate as a Tensor attribute
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            **extra,
        )
    new = [int(i) for i in out[0, len(prompt) :].tolist()]
    for position, token in enumerate(new):
        if token in stops:
            return new[:position], False
    return new, len(new) >= max_new_tokens
