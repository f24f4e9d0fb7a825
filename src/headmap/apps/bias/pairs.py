"""Counterfactual prompts and pairs: the same template with a name of group A or of group B.

**Prompts.** One prompt per name: the template filled with it, run as ``tokenizer(text)`` would
(special tokens included), or with ``chat=True`` as the user message of the model's chat template
with the generation prompt (the template's default system prompt included). The prompt depends
on the name only, so each is run once, however many pairs it is in.

**Spans.** The name's tokens are the non-special tokens whose characters overlap any occurrence of
the name (a token that straddles the name and a neighbour counts as the name's); the evidence's
tokens likewise. A token in both is refused: the two spans must be told apart.

**Pairs** ``[pair, 2]`` (index into A's names, index into B's names): every A name with every B
name by default. ``count`` pairs instead: with ``count <= min(|A|, |B|)`` a seeded one-to-one
matching (each name in at most one pair, so the pairs are independent); above that, ``count``
distinct pairs drawn uniformly from all of them (names then repeat).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from headmap.apps.bias.inputs import Template
from headmap.apps.chat import has_chat_template
from headmap.attribution.target import encode_text
from headmap.capture.encoding import Encoded, encode_parts
from headmap.errors import HeadmapError
from headmap.models import LoadedModel


@dataclass(frozen=True)
class BiasPrompt:
    """One filled template as the model sees it: exact text and ids, and where the name and evidence lie."""

    group: int
    """0 for group A, 1 for group B."""
    name: str
    text: str
    encoded: Encoded
    name_tokens: tuple[int, ...]
    evidence_tokens: tuple[int, ...]

    @property
    def ids(self) -> list[int]:
        return list(self.encoded.ids)

    def __len__(self) -> int:
        return len(self.encoded.ids)


def build_prompt(
    loaded: LoadedModel, template: Template, name: str, group: int, chat: bool = False
) -> BiasPrompt:
    """The prompt of ``name`` (see the module docstring), tokenized, with its name and evidence tokens."""
    message, name_chars, evidence_chars = template.fill(name)
    if chat:
        tokenizer = loaded.tokenizer
        if not has_chat_template(tokenizer):
            raise HeadmapError(
                f"{loaded.name} has no chat template: drop --chat to use the template as plain text"
            )
        text = tokenizer.apply_chat_template(  # type: ignore[attr-defined]  # LoadedModel.tokenizer is typed as object (any fast tokenizer)
            [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
        )
        shift = text.rfind(message)
        if shift < 0:
            raise HeadmapError(
                "the model's chat template rewrites the user message, so the name cannot be located "
                "in the prompt: drop --chat"
            )
        encoded = encode_parts(tokenizer, [text])
        limit = loaded.max_positions
        if limit is not None and len(encoded.ids) > limit:
            raise HeadmapError(
                f"the prompt has {len(encoded.ids)} tokens but {loaded.name} accepts at most {limit}: "
                "shorten the template"
            )
    else:
        text, shift = message, 0
        ids, tokens = encode_text(loaded, text)
        encoded = Encoded(tuple(ids), tokens)
    name_tokens = _overlapping(encoded, [(a + shift, b + shift) for a, b in name_chars])
    evidence_tokens = _overlapping(encoded, [(evidence_chars[0] + shift, evidence_chars[1] + shift)])
    if not name_tokens:
        raise HeadmapError(f"the name {name!r} has no tokens of its own in the prompt")
    shared = sorted(set(name_tokens) & set(evidence_tokens))
    if shared:
        piece = encoded.tokens.tokens[shared[0]]
        raise HeadmapError(
            f"token {shared[0]} ({piece!r}) holds part of the name {name!r} and part of the evidence: "
            "put a space or punctuation between the name's slot and the evidence phrase"
        )
    return BiasPrompt(group, name, text, encoded, tuple(name_tokens), tuple(evidence_tokens))


def _overlapping(encoded: Encoded, spans: Sequence[tuple[int, int]]) -> list[int]:
    """Indices of the non-special tokens whose characters overlap any of ``spans``."""
    offsets, special = encoded.tokens.offsets, encoded.tokens.special
    return [
        i
        for i, (a, b) in enumerate(offsets)
        if not special[i] and b > a and any(a < end and b > start for start, end in spans)
    ]


def make_pairs(n_a: int, n_b: int, count: int | None = None, seed: int = 0) -> np.ndarray:
    """``[pair, 2]`` int: (A index, B index) pairs, sorted; all of them, or ``count`` (module docstring)."""
    if count is None:
        a, b = np.meshgrid(np.arange(n_a), np.arange(n_b), indexing="ij")
        return np.stack([a.ravel(), b.ravel()], axis=1)
    total = n_a * n_b
    if not 1 <= count <= total:
        raise HeadmapError(f"--pairs must lie in 1..{total} (the {n_a} x {n_b} possible pairs), not {count}")
    rng = np.random.default_rng(seed)
    if count <= min(n_a, n_b):
        pairs = np.stack([rng.permutation(n_a)[:count], rng.permutation(n_b)[:count]], axis=1)
    else:
        flat = rng.choice(total, size=count, replace=False)
        pairs = np.stack([flat // n_b, flat % n_b], axis=1)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def name_uses(pairs: np.ndarray) -> int:
    """The most pairs any one name is in (``pairs`` ``[pair, 2]``); 1 means the pairs are independent."""
    return max(int(np.unique(pairs[:, side], return_counts=True)[1].max()) for side in (0, 1))


def pairing(pairs: np.ndarray, n_a: int, n_b: int) -> str:
    """One sentence on how the pairs were formed and whether they are independent (``pairs`` ``[pair, 2]``
    of any indices that tell names apart)."""
    uses = name_uses(pairs)
    if len(pairs) == n_a * n_b:
        how = f"every A name with every B name ({n_a} x {n_b} = {len(pairs)} pairs)"
    else:
        how = f"{len(pairs)} pairs drawn with a fixed seed from the {n_a} x {n_b} possible ones"
    if uses <= 1:
        return f"Pairs: {how}, each name in one pair only, so the pairs are independent."
    return (
        f"Pairs: {how}; a name appears in up to {uses} pairs, so the pairs are not independent and the paired "
        "p-values and bootstrap intervals, which treat them as independent, overstate the evidence: "
        f"--pairs N with N <= {min(n_a, n_b)} uses each name once."
    )
