"""Tokenize text exactly as the model's tokenizer does by default, keeping offsets and special flags."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from headmap.errors import HeadmapError
from headmap.tokens import Tokens

_VISIBLE_WHITESPACE = str.maketrans({"\n": "⏎", " ": "␣", "\t": "⇥", "\r": "␍"})


def encode(tokenizer: object, text: str, max_positions: int | None = None) -> tuple[list[int], Tokens]:
    """Token ids and :class:`Tokens` of ``text``: ``tokenizer(text)`` with special tokens, no chat template.

    Display strings come from the text itself through the offsets, so byte-level markers such as
    'Ġ' never reach a picture; a token that is only whitespace is shown as a visible symbol.
    """
    if not isinstance(text, str) or not text.strip():
        raise HeadmapError("the text is empty: give at least one word to analyse")
    enc = tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True)  # type: ignore[operator]
    ids = list(enc["input_ids"])
    if max_positions is not None and len(ids) > max_positions:
        raise HeadmapError(
            f"the text has {len(ids)} tokens but this model accepts at most {max_positions}: shorten the text"
        )
    raw = tokenizer.convert_ids_to_tokens(ids)  # type: ignore[attr-defined]
    special = [bool(s) for s in enc["special_tokens_mask"]]
    offsets = [(int(a), int(b)) for a, b in enc["offset_mapping"]]
    display = []
    for piece_raw, (start, end), is_special in zip(raw, offsets, special):
        piece = text[start:end]
        if is_special or not piece:
            display.append(str(piece_raw))
        else:
            display.append(piece.strip() or piece.translate(_VISIBLE_WHITESPACE))
    return ids, Tokens(text=text, tokens=tuple(display), offsets=tuple(offsets), special=tuple(special))


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
