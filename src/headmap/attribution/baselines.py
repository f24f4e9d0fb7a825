"""Integrated Gradients baselines: the point the straight path to the input starts from.

A baseline is given by name (``--baseline`` on the command line):

- ``mask``: every ordinary token replaced by the tokenizer's ``[MASK]`` (masked models; the
  "masked-token path": each step is a blend of the text and an all-``[MASK]`` text);
- ``pad``: every ordinary token replaced by the pad token (or a token id: that token);
- ``uniform``: every ordinary token replaced by the mean row of the input embedding matrix (the
  "average token" under a uniform prior over the vocabulary);
- ``data``: every ordinary token replaced by the mean embedding of the tokens of a corpus
  (default ``corpora/sentences.txt``), each occurrence counted: the average token of real text,
  a cheap estimate of the data mean (thousands of tokens; computed once per model and corpus);
- ``zero``: the zero vector (captum's default baseline);
- a suffix ``+first`` (``pad+first``, ``uniform+first``, ...) also keeps token 0 at its real
  embedding along the whole path. Decoders use their first token as an attention sink; moving it
  away from its real embedding changes every later position at once, and the explained
  log-probability then jumps along the path, which no number of steps integrates. With ``+first``
  token 0 is part of the baseline: its score is 0 by construction, not because it does not matter.

Special tokens (BOS, CLS, SEP) and the explained ``[MASK]`` of a masked-token target are kept in
every baseline: they are the frame, not the evidence. ``auto`` picks per model family from the
measurements in ``benchmarks/ig_paths.py`` (see :func:`auto_baseline`).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from headmap.attribution.base import Problem
from headmap.capture.encoding import pad_token_id
from headmap.errors import HeadmapError

#: Baseline names; each may carry the suffix ``+first``.
KINDS = ("mask", "pad", "uniform", "data", "zero")
KEEP_FIRST = "+first"
#: The corpus of the ``data`` baseline, relative to the working folder or the source tree.
DATA_CORPUS = Path("corpora") / "sentences.txt"

_data_means: weakref.WeakKeyDictionary[torch.nn.Module, dict[str, torch.Tensor]] = weakref.WeakKeyDictionary()
_data_lock = threading.Lock()


@dataclass(frozen=True)
class Baseline:
    """A resolved baseline: ``embeds`` ``[1, token, hidden]`` and what it is.

    ``kept``: the positions held at the input's own embedding (their score is exactly 0);
    ``token_id``: the replacing token when the baseline is a text of tokens, else None.
    """

    name: str
    embeds: torch.Tensor
    kept: tuple[int, ...]
    token_id: int | None
    description: str


def parse(value: str | int) -> tuple[str | int, bool]:
    """``"uniform+first" -> ("uniform", True)``; a token id (int or digits) stays an int."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value), False
    if not isinstance(value, str):
        raise HeadmapError(f"unknown IG baseline {value!r}: {choices()}")
    text = value.strip().lower()
    keep = text.endswith(KEEP_FIRST)
    kind = text.removesuffix(KEEP_FIRST)
    if kind.lstrip("-").isdigit():
        return int(kind), keep
    if kind not in (*KINDS, "auto") or (keep and kind == "auto"):
        raise HeadmapError(f"unknown IG baseline {value!r}: {choices()}")
    return kind, keep


def choices() -> str:
    return (
        f"use 'auto', one of {', '.join(repr(k) for k in KINDS)} or a token id, "
        f"optionally with {KEEP_FIRST!r} (e.g. 'pad{KEEP_FIRST}')"
    )


def auto_baseline(problem: Problem) -> str:
    """The default: ``mask`` for models whose tokenizer has a mask token (encoders), else
    ``uniform+first`` (decoders: on SmolLM2 it met the 5% completeness rule on 12 of 12 texts at 100 steps, pad+first on 9, pad on none), from benchmarks/ig_paths.py (see benchmarks/README.md)."""
    mask = getattr(problem.loaded.tokenizer, "mask_token_id", None)
    return "mask" if isinstance(mask, int) else "uniform" + KEEP_FIRST


def kept_positions(problem: Problem, keep_first: bool) -> tuple[int, ...]:
    """Special tokens, the explained [MASK] of a masked-token target, and token 0 with ``+first``."""
    keep = {i for i, s in enumerate(problem.tokens.special) if s}
    if problem.target.kind == "masked-token":
        keep.add(problem.position)
    if keep_first:
        keep.add(0)
    return tuple(sorted(keep))


def _token(problem: Problem, kind: str | int) -> int:
    tokenizer = problem.loaded.tokenizer
    if kind == "mask":
        mask = getattr(tokenizer, "mask_token_id", None)
        if not isinstance(mask, int):
            raise HeadmapError(
                f"{problem.loaded.name}'s tokenizer has no mask token: use another baseline ({choices()})"
            )
        return mask
    if kind == "pad":
        return pad_token_id(tokenizer)
    token = int(kind)
    if not 0 <= token < len(tokenizer):  # type: ignore[arg-type]  # LoadedModel.tokenizer is typed as object (any fast tokenizer)
        raise HeadmapError(f"baseline token id {token} is out of range for this vocabulary")
    return token


def _rows(layer: torch.nn.Module, problem: Problem) -> torch.Tensor:
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise HeadmapError(
            f"{problem.loaded.name}'s input embedding has no weight matrix: use a token baseline"
        )
    return weight[: len(problem.loaded.tokenizer)]  # type: ignore[arg-type]  # rows past the tokenizer are padding, never looked up


def data_corpus() -> Path:
    """``corpora/sentences.txt`` of the working folder, else of the source tree headmap runs from."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[3]):
        if (root / DATA_CORPUS).is_file():
            return root / DATA_CORPUS
    raise HeadmapError(f"the 'data' baseline needs {DATA_CORPUS}: pass corpus= or use 'uniform'")


def data_mean(problem: Problem, layer: torch.nn.Module, corpus: Path | None = None) -> torch.Tensor:
    """``[hidden]``: the mean input embedding over every token occurrence of the corpus's lines
    (special tokens left out), computed once per embedding layer and corpus."""
    path = (corpus or data_corpus()).resolve()
    with _data_lock:
        cached = _data_means.setdefault(layer, {})
        if str(path) in cached:
            return cached[str(path)]
    lines = [s.strip() for s in path.read_text(encoding="utf-8").splitlines()]
    texts = [s for s in lines if s and not s.startswith("#")]
    if not texts:
        raise HeadmapError(f"the corpus {path} has no texts for the 'data' baseline")
    counts = np.zeros(len(problem.loaded.tokenizer), dtype=np.float64)  # type: ignore[arg-type]  # LoadedModel.tokenizer is typed as object (any fast tokenizer)
    for ids in problem.loaded.tokenizer(texts, add_special_tokens=False)["input_ids"]:  # type: ignore[operator]  # LoadedModel.tokenizer is typed as object (any fast tokenizer)
        np.add.at(counts, np.asarray(ids, dtype=np.int64), 1.0)
    with torch.no_grad():
        rows = _rows(layer, problem)
        weights = torch.as_tensor(counts / counts.sum(), dtype=torch.float64, device=rows.device)
        mean = (weights[:, None] * rows.double()).sum(0).to(rows.dtype)
    with _data_lock:
        cached[str(path)] = mean
    return mean


def resolve(
    problem: Problem,
    value: str | int,
    layer: torch.nn.Module,
    embeds: torch.Tensor,
    corpus: Path | None = None,
) -> Baseline:
    """The baseline ``value`` for ``problem``; ``embeds`` ``[1, token, hidden]`` are the input's."""
    kind, keep_first = parse(value)
    if kind == "auto":
        kind, keep_first = parse(auto_baseline(problem))
    kept = kept_positions(problem, keep_first)
    token: int | None = None
    with torch.no_grad():
        if kind in ("mask", "pad") or isinstance(kind, int):
            token = _token(problem, kind)
            fill = layer(torch.tensor([token], device=embeds.device))[0]
            what = f"every ordinary token replaced by {_name(problem, token)!r} (id {token})"
        elif kind == "uniform":
            fill = _rows(layer, problem).mean(0)
            what = "every ordinary token replaced by the mean row of the embedding matrix"
        elif kind == "data":
            fill = data_mean(problem, layer, corpus)
            what = f"every ordinary token replaced by the mean embedding of the tokens of {(corpus or DATA_CORPUS).name}"
        else:
            fill = torch.zeros_like(embeds[0, 0])
            what = "every ordinary token's embedding replaced by zeros"
        base = fill.to(embeds.device, embeds.dtype).expand_as(embeds).clone()
        if kept:
            index = torch.tensor(kept, device=embeds.device)
            base[:, index] = embeds[:, index]
    name = f"{kind}{KEEP_FIRST if keep_first else ''}"
    frame = "special tokens" + (" and token 0 (the decoder's first token)" if keep_first else "") + " kept"
    return Baseline(name, base.detach(), kept, token, f"{name}: {what}; {frame}")


def _name(problem: Problem, token: int) -> str:
    return str(problem.loaded.tokenizer.convert_ids_to_tokens([token])[0])  # type: ignore[attr-defined]  # LoadedModel.tokenizer is typed as object (any fast tokenizer)
