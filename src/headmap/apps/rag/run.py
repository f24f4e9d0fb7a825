"""``rag()``: attention evidence and the causal check for one question over retrieved chunks.

Forward passes, for ``n`` chunks: the greedy generation (unless an answer is given), one
teacher-forced capture of prompt + answer (answer rows only), ``n`` captures with one chunk
replaced by its dummy (calibration), and ``n + 1`` teacher-forced scorings (all chunks, then each
one removed). No attention map is held: blocks are reduced to chunk sums as they arrive.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from headmap.apps.chat import has_chat_template
from headmap.apps.rag.causal import answer_token_logprobs
from headmap.apps.rag.chunks import CHUNK_EXTENSIONS, Chunk, as_chunks, read_chunks
from headmap.apps.rag.evidence import dummy_text, lookback_ratio
from headmap.apps.rag.features import answer_evidence
from headmap.apps.rag.prompt import (
    RagPrompt,
    build_prompt,
    check_causal_lm,
    encode_answer,
    generate_answer,
)
from headmap.apps.rag.report import RagReport
from headmap.apps.rag.surrogate import surrogate as fit_surrogate
from headmap.attribution.calibrated import Calibration, as_calibration
from headmap.capture import CapturePlan
from headmap.capture.plan import LayerSpec
from headmap.errors import HeadmapError
from headmap.models import LoadedModel, load

ChunkInput = Sequence[str | Chunk | Mapping[str, object]] | str | Path


def rag(
    model: LoadedModel | str,
    question: str,
    chunks: ChunkInput,
    *,
    answer: str | Sequence[int] | None = None,
    max_new_tokens: int = 48,
    layers: LayerSpec | Sequence[LayerSpec] | None = None,
    heads: int | Sequence[int] | None = None,
    surrogate: int = 0,
    seed: int = 0,
    calibration: Calibration | str | Path | None = None,
    progress: bool = False,
) -> RagReport:
    """Check which retrieved chunks a causal LM's answer draws on, by attention and by removal.

    ``chunks``: a list of texts, :class:`Chunk` objects or ``{"text", "id"}`` mappings, or a path
    to a ``.jsonl``/``.txt`` file. The prompt numbers them ``[1]..[n]`` inside the model's chat
    template (see :mod:`headmap.apps.rag.prompt`). ``answer``: a text (tokenized without special
    tokens) or exact answer ids; None generates one greedily (``max_new_tokens``, stopping at
    EOS). ``layers``/``heads``: which layers and heads are captured and averaged (None: all).
    ``surrogate``: also fit a ContextCite-style surrogate on that many seeded random ablations of the
    chunks (:mod:`headmap.apps.rag.surrogate`; 0: none), reported beside leave-one-out with its agreement.
    ``calibration``: AT2-style head weights (``headmap calibrate``; a file or a
    :class:`~headmap.attribution.calibrated.Calibration`) that weight each head's mass on the chunks:
    needs every layer and head captured (the default).

    The attention of answer token ``t`` is the row of the position that predicts it (the one just
    before it). Attention is correlation, not causation: the report puts each chunk's attention
    beside the drop in the answer's teacher-forced log-probability when the chunk is removed.
    """
    loaded = load(model) if isinstance(model, str) else model
    check_causal_lm(loaded)
    weights = None if calibration is None else as_calibration(calibration, loaded).weights
    items = _chunks(chunks)
    texts = [c.text for c in items]
    tokenizer = loaded.tokenizer
    prompt = build_prompt(tokenizer, question, texts)
    given = None if answer is None else _given_answer(tokenizer, answer)
    check_length(
        loaded, len(prompt) + (max_new_tokens if given is None else len(given)), "the prompt with the answer"
    )
    with _Progress(progress, 2 * len(items) + 2 + (given is None) + surrogate) as tick:
        if given is None:
            answer_ids, truncated = _generate(loaded, prompt, max_new_tokens)
            tick()
        else:
            answer_ids, truncated = given, False
        evidence = answer_evidence(loaded, prompt, answer_ids, layers=layers, heads=heads)
        plan, full = evidence.plan, evidence.full
        tick()
        mass, answer_mass = evidence.mass, evidence.answer_mass
        dummies = [dummy_text(tokenizer, stop - first) for first, stop in prompt.chunk_tokens]
        dummy_mass = np.stack(
            [
                _slot_mass(loaded, question, texts, slot, dummy, answer_ids, plan, tick)
                for slot, dummy in enumerate(dummies)
            ],
            axis=-1,
        )
        token_logprobs = answer_token_logprobs(loaded, prompt.ids, answer_ids)
        tick()
        # Each chunk removed, the others renumbered; with one chunk only, the prompt has none.
        reduced = [
            build_prompt(tokenizer, question, [*texts[:slot], *texts[slot + 1 :]])
            for slot in range(len(items))
        ]
        without = []
        for r in reduced:
            without.append(answer_token_logprobs(loaded, r.ids, answer_ids))
            tick()
        fitted = (
            fit_surrogate(loaded, question, texts, answer_ids, k=surrogate, seed=seed, tick=tick)
            if surrogate
            else None
        )
    context_tokens = sum(stop - first for first, stop in prompt.chunk_tokens)
    return RagReport(
        model=loaded.name,
        question=question,
        chunks=tuple(items),
        prompt=prompt.text,
        prompt_ids=tuple(prompt.ids),
        chat_template=has_chat_template(tokenizer),
        answer=tokenizer.decode(answer_ids),  # type: ignore[attr-defined]  # LoadedModel.tokenizer is typed as object (any fast tokenizer)
        answer_ids=tuple(answer_ids),
        answer_tokens=full.tokens.tokens[len(prompt) :],
        generated=given is None,
        max_new_tokens=max_new_tokens if given is None else None,
        truncated=truncated,
        layers=tuple(k.name for k in plan.layers),
        heads=tuple(plan.heads),
        chunk_token_counts=tuple(stop - first for first, stop in prompt.chunk_tokens),
        chunk_pieces=tuple(tuple(chunk_pieces(prompt, c)) for c in range(len(items))),
        piece_attention=tuple(evidence.key_mean[first:stop].copy() for first, stop in prompt.chunk_tokens),
        mass=mass,
        answer_mass=answer_mass,
        lookback=lookback_ratio(mass, answer_mass, context_tokens),
        dummy_texts=tuple(dummies),
        dummy_mass=dummy_mass,
        token_logprobs=token_logprobs,
        prompts_without=tuple(r.text for r in reduced),
        token_logprobs_without=np.stack(without),
        surrogate=fitted,
        head_weights=_head_weights(weights, mass),
    )


def _generate(loaded: LoadedModel, prompt: RagPrompt, max_new_tokens: int) -> tuple[list[int], bool]:
    answer_ids, truncated = generate_answer(loaded, prompt, max_new_tokens)
    if not answer_ids:
        raise HeadmapError(
            "the model ended its answer at once (no tokens before EOS): give an answer to check with --answer"
        )
    return answer_ids, truncated


def _slot_mass(
    loaded: LoadedModel,
    question: str,
    texts: list[str],
    slot: int,
    dummy: str,
    answer_ids: list[int],
    plan: CapturePlan,
    tick: Callable[[], None],
) -> np.ndarray:
    """``[layer, head, answer_token]``: the mass slot ``slot`` gets with its chunk replaced by ``dummy``."""
    replaced = build_prompt(loaded.tokenizer, question, [*texts[:slot], dummy, *texts[slot + 1 :]])
    probe = answer_evidence(loaded, replaced, answer_ids, layers=plan.layers, heads=plan.heads)
    tick()
    return probe.mass[..., slot]


def _chunks(chunks: ChunkInput) -> list[Chunk]:
    """A path (a ``Path``, or a string ending in .jsonl/.txt) is read; anything else is a list of chunks."""
    if isinstance(chunks, Path) or (
        isinstance(chunks, str) and Path(chunks).suffix.lower() in CHUNK_EXTENSIONS
    ):
        return read_chunks(chunks)
    return as_chunks(chunks)


def check_length(loaded: LoadedModel, tokens: int, what: str) -> None:
    """Models with a position table fail deep inside torch past it: say so first."""
    limit = loaded.max_positions
    if limit is not None and tokens > limit:
        raise HeadmapError(
            f"{what} needs {tokens} tokens but {loaded.name} accepts at most {limit}: "
            "use fewer or shorter chunks, a shorter answer or a lower --max-new-tokens"
        )


def _given_answer(tokenizer: object, answer: str | Sequence[int]) -> list[int]:
    if isinstance(answer, str):
        return encode_answer(tokenizer, answer)
    ids = [int(i) for i in answer]
    if not ids:
        raise HeadmapError("the answer has no tokens: give the answer text or its ids")
    vocab = len(tokenizer)  # type: ignore[arg-type]  # LoadedModel.tokenizer is typed as object (any fast tokenizer)
    if any(not 0 <= i < vocab for i in ids):
        raise HeadmapError(f"answer ids must lie in 0..{vocab - 1} (the tokenizer's vocabulary)")
    return ids


def chunk_pieces(prompt: RagPrompt, chunk: int) -> list[str]:
    """The chunk's text cut at its token boundaries (leading whitespace stays with the token after it)."""
    start, end = prompt.chunk_chars[chunk]
    first, stop = prompt.chunk_tokens[chunk]
    offsets = prompt.encoded.tokens.offsets
    pieces, position = [], start
    for i in range(first, stop):
        cut = end if i == stop - 1 else min(max(offsets[i][1], position), end)
        pieces.append(prompt.text[position:cut])
        position = cut
    return pieces


class _Progress:
    """A tqdm bar over the forward passes (or nothing); used as ``with _Progress(on, n) as tick: tick()``."""

    def __init__(self, enabled: bool, total: int) -> None:
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc="rag forwards", unit="pass", leave=False)

    def __enter__(self) -> Callable[[], None]:
        return self._tick

    def _tick(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()


def _head_weights(weights: np.ndarray | None, mass: np.ndarray) -> np.ndarray | None:
    """The calibration's ``[layer, head]`` weights, checked against the captured ``mass``."""
    if weights is None:
        return None
    if weights.shape != mass.shape[:2]:
        raise HeadmapError(
            f"the calibration has {weights.shape} (layer, head) weights but {mass.shape[:2]} were captured: "
            "leave --layers and --heads at 'all' with --calibration"
        )
    return weights
