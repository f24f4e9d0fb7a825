"""Tokenize text exactly as the model's tokenizer does by default, keeping offsets and special flags."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from headmap.errors import HeadmapError
from headmap.models import LoadedModel
from headmap.tokens import Tokens

_VISIBLE_WHITESPACE = str.maketrans({"\n": "⏎", " ": "␣", "\t": "⇥", "\r": "␍"})


@dataclass(frozen=True)
class Encoded:
    """A text already turned into the exact token ids the model is to see, with their :class:`Tokens`.

    :func:`headmap.capture` takes these besides plain strings, for inputs that ``tokenizer(text)``
    would not reproduce: a chat-templated prompt followed by generated answer ids, say.
    ``inputs``: further model inputs of this one text, each with a batch axis of one
    (``pixel_values`` of a vision-language model's image, see :mod:`headmap.capture.vlm`).
    """

    ids: tuple[int, ...]
    tokens: Tokens
    inputs: tuple[tuple[str, torch.Tensor], ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.tokens):
            raise ValueError(f"{len(self.ids)} ids for {len(self.tokens)} tokens")
        if not self.ids:
            raise HeadmapError("the input has no tokens: give at least one word to analyse")


def extra_inputs(items: Sequence[object]) -> dict[str, torch.Tensor]:
    """The further model inputs of a batch's :class:`Encoded` texts (their ``inputs``), joined on the
    batch axis; a batch that mixes texts with and without them is refused in one line."""
    found = [dict(item.inputs) if isinstance(item, Encoded) else {} for item in items]
    names = {tuple(sorted(f)) for f in found}
    if len(names) > 1:
        raise HeadmapError("texts with an image and texts without one in a batch: capture with batch_size=1")
    return {name: torch.cat([f[name] for f in found]) for name in next(iter(names), ())}


def _display(piece: str, raw: str, special: bool) -> str:
    if special or not piece:
        return raw
    return piece.strip() or piece.translate(_VISIBLE_WHITESPACE)


def encode_parts(tokenizer: object, parts: Sequence[str | Sequence[int]]) -> Encoded:
    """Concatenate parts into one :class:`Encoded`: a string is tokenized on its own without added
    special tokens (special-token text such as ``<|im_start|>`` in a chat template is still read as
    that token), a sequence of ids is taken as is and shown token by token.

    Offsets point into the concatenated text; a token is special when its id is one of the
    tokenizer's special ids.
    """
    special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    ids: list[int] = []
    names: list[str] = []
    offsets: list[tuple[int, int]] = []
    text = ""
    for part in parts:
        if isinstance(part, str):
            enc = tokenizer(part, add_special_tokens=False, return_offsets_mapping=True)  # type: ignore[operator]  # untyped tokenizer
            piece_ids = list(enc["input_ids"])
            spans = [(len(text) + a, len(text) + b) for a, b in enc["offset_mapping"]]
            text += part
        else:
            piece_ids = [int(i) for i in part]
            spans = []
            for i in piece_ids:
                shown = tokenizer.decode([i])  # type: ignore[attr-defined]  # untyped tokenizer
                spans.append((len(text), len(text) + len(shown)))
                text += shown
        raw = tokenizer.convert_ids_to_tokens(piece_ids)  # type: ignore[attr-defined]  # untyped tokenizer
        for i, (start, end), r in zip(piece_ids, spans, raw):
            ids.append(i)
            offsets.append((start, end))
            names.append(_display(text[start:end], str(r), i in special_ids))
    tokens = Tokens(
        text=text, tokens=tuple(names), offsets=tuple(offsets), special=tuple(i in special_ids for i in ids)
    )
    return Encoded(tuple(ids), tokens)


def encode(
    tokenizer: object, text: str | Encoded, max_positions: int | None = None
) -> tuple[list[int], Tokens]:
    """Token ids and :class:`Tokens` of ``text``: ``tokenizer(text)`` with special tokens, no chat template.

    Display strings come from the text itself through the offsets, so byte-level markers such as
    'Ġ' never reach a picture; a token that is only whitespace is shown as a visible symbol. An
    :class:`Encoded` input is taken as it is (checked against ``max_positions`` only).
    """
    if isinstance(text, Encoded):
        _check_length(len(text.ids), max_positions)
        return list(text.ids), text.tokens
    if not isinstance(text, str) or not text.strip():
        raise HeadmapError("the text is empty: give at least one word to analyse")
    enc = tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True)  # type: ignore[operator]  # untyped tokenizer
    ids = list(enc["input_ids"])
    _check_length(len(ids), max_positions)
    raw = tokenizer.convert_ids_to_tokens(ids)  # type: ignore[attr-defined]  # untyped tokenizer
    special = [bool(s) for s in enc["special_tokens_mask"]]
    offsets = [(int(a), int(b)) for a, b in enc["offset_mapping"]]
    display = [_display(text[a:b], str(r), s) for r, (a, b), s in zip(raw, offsets, special)]
    return ids, Tokens(text=text, tokens=tuple(display), offsets=tuple(offsets), special=tuple(special))


def _check_length(n: int, max_positions: int | None) -> None:
    if max_positions is not None and n > max_positions:
        raise HeadmapError(
            f"the text has {n} tokens but this model accepts at most {max_positions}: shorten the text"
        )


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_id: int, side: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``input_ids``, ``attention_mask`` and ``position_ids`` ``[batch, max_len]`` for padded sequences.

    Position ids count only real tokens, so a left-padded text gets the positions it has alone.
    """
    if side not in ("left", "right"):
        raise HeadmapError(f"padding side must be 'left' or 'right', not {side!r}")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        span = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[i, span] = torch.tensor(list(seq), dtype=torch.long)
        mask[i, span] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions


def pad_token_id(tokenizer: object) -> int:
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return 0


def encode_targets(
    loaded: LoadedModel,
    is_encoder_decoder: bool,
    texts: Sequence[str | Encoded],
    target: str | Sequence[str] | None,
    limit: int | None,
) -> list[tuple[list[int], Tokens]]:
    """Decoder inputs of encoder-decoder models, one per text: the decoder start token, then the
    target's tokens (the text itself where no target is given); none for other models."""
    if not is_encoder_decoder:
        if target is not None:
            raise HeadmapError(f"{loaded.name} is not an encoder-decoder model: it takes no target text")
        return []
    wanted: list[str | Encoded] = (
        list(texts)
        if target is None
        else ([target] * len(texts) if isinstance(target, str) else list(target))
    )
    if len(wanted) != len(texts):
        raise HeadmapError(f"got {len(wanted)} target texts for {len(texts)} texts: give one per text")
    configured = getattr(loaded.model.config, "decoder_start_token_id", None)
    start = pad_token_id(loaded.tokenizer) if configured is None else int(configured)
    start_token = str(loaded.tokenizer.convert_ids_to_tokens([start])[0])  # type: ignore[attr-defined]  # untyped tokenizer
    out: list[tuple[list[int], Tokens]] = []
    for t in wanted:
        ids, tokens = encode(loaded.tokenizer, t, limit)
        tokens = Tokens(
            text=tokens.text,
            tokens=(start_token, *tokens.tokens),
            offsets=((0, 0), *tokens.offsets),
            special=(True, *tokens.special),
        )
        out.append(([start, *ids], tokens))
    return out
