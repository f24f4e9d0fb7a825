"""Partial sums of a corpus report, and their exact combination.

A corpus report is computed in two separate steps so that the first can run anywhere (a loop here,
worker processes elsewhere) and the second always gives the same table:

1. :class:`Partial`: for a group of texts, per text and per (statistic, layer, head) the *sum* of
   the statistic over the text's query rows and the number of rows it is over; the diversity sums
   of the group; per text the head-importance gradients. Plain numpy arrays, written to and read
   from safetensors (:meth:`Partial.arrays` / :meth:`Partial.from_arrays`).
2. :func:`combine`: pure. Per-text arrays are put in corpus order (by text index) before anything
   is added, so the result does not depend on the order partials arrive in, nor on how texts were
   grouped; the diversity sums are added group by group in order of each group's first text.

Each row counts once: a corpus mean is ``sum over texts of sums / sum over texts of counts``. The
spread ``<stat>_std`` is the sample standard deviation (ddof=1) across texts of each text's own
mean, over the texts where the statistic is defined.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from headmap.analysis.stats import STATS
from headmap.errors import HeadmapError

#: The statistics of a corpus report: the streaming ones plus the share on the next token.
CORPUS_STATS = (*STATS, "next_share")


@dataclass(frozen=True)
class ReportSpec:
    """What a report measures; partials are only combined with partials of the same spec."""

    model: str
    layers: tuple[str, ...]  # layer names ("layer.3", "cross.0") in depth order
    heads: tuple[int, ...]
    stats: tuple[str, ...] = CORPUS_STATS
    diversity: bool = True

    @property
    def n_heads(self) -> int:
        """Heads in the report: every asked head of every asked layer."""
        return len(self.layers) * len(self.heads)

    def head_labels(self) -> list[str]:
        """``layer.i/head.j`` for every head, layer-major (the order of every ``[head]`` axis)."""
        return [f"{layer}/head.{head}" for layer in self.layers for head in self.heads]

    def to_json(self) -> str:
        return json.dumps(
            {
                "model": self.model,
                "layers": list(self.layers),
                "heads": list(self.heads),
                "stats": list(self.stats),
                "diversity": self.diversity,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> ReportSpec:
        data = json.loads(text)
        return cls(
            data["model"],
            tuple(data["layers"]),
            tuple(data["heads"]),
            tuple(data["stats"]),
            data["diversity"],
        )


@dataclass(frozen=True)
class Partial:
    """Partial sums over a group of texts (see the module docstring).

    ``sums`` is ``[text, stat, layer, head]`` and ``counts`` ``[text, stat, layer]`` (float64, rows);
    ``js`` the strict upper triangle (row-major, ``numpy.triu_indices(n_heads, 1)``) of the
    ``[head, head]`` sum over the group's texts of each text's head distance; ``importance``
    ``[text, layer, head]`` the absolute gradient of each text's loss by each head's gate.
    A stats partial has ``sums`` and ``counts``, an importance partial ``importance``.
    """

    indices: np.ndarray  # [text] int64: positions in the corpus
    digests: tuple[str, ...]
    n_tokens: np.ndarray  # [text] int64
    sums: np.ndarray | None = None
    counts: np.ndarray | None = None
    js: np.ndarray | None = None
    importance: np.ndarray | None = None
    notes: tuple[str, ...] = ()
    """How the group was computed (packed or padded, which kernel served which layers, and why)."""

    @property
    def kind(self) -> str:
        return "importance" if self.importance is not None else "stats"

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"indices": self.indices.astype(np.int64), "n_tokens": self.n_tokens.astype(np.int64)}
        for name in ("sums", "counts", "js", "importance"):
            value = getattr(self, name)
            if value is not None:
                out[name] = np.ascontiguousarray(value, dtype=np.float64)
        return out

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], digests: Sequence[str], notes: Sequence[str] = ()
    ) -> Partial:
        return cls(
            indices=arrays["indices"],
            digests=tuple(digests),
            n_tokens=arrays["n_tokens"],
            sums=arrays.get("sums"),
            counts=arrays.get("counts"),
            js=arrays.get("js"),
            importance=arrays.get("importance"),
            notes=tuple(notes),
        )


def run_notes(partials: Iterable[Partial]) -> tuple[str, ...]:
    """The partials' notes, each once, in the order they first appear."""
    return tuple(dict.fromkeys(note for p in partials for note in p.notes))


def pack_upper(matrix: np.ndarray) -> np.ndarray:
    """The strict upper triangle of a square ``[n, n]`` matrix, row-major."""
    return matrix[np.triu_indices(matrix.shape[0], 1)]


def unpack_upper(packed: np.ndarray, n: int) -> np.ndarray:
    """The symmetric ``[n, n]`` matrix with zero diagonal whose strict upper triangle is ``packed``."""
    out = np.zeros((n, n), dtype=np.float64)
    out[np.triu_indices(n, 1)] = packed
    return out + out.T


@dataclass(frozen=True)
class Combined:
    """Corpus-wide values, every ``[layer, head]`` array in the spec's order."""

    spec: ReportSpec
    indices: np.ndarray  # [text] the texts combined, in corpus order
    n_tokens: int
    n_rows: np.ndarray  # [layer] query rows per head (each row counts once)
    mean: dict[str, np.ndarray]  # stat -> [layer, head]
    std: dict[str, np.ndarray]  # stat -> [layer, head], across texts (ddof=1)
    distances: np.ndarray | None  # [head, head]: mean over texts of the summed JS divergence
    importance: np.ndarray | None  # [layer, head]: mean over texts of |d loss / d gate|
    importance_texts: int = 0

    @property
    def n_texts(self) -> int:
        return len(self.indices)

    @property
    def importance_norm(self) -> np.ndarray | None:
        """Importance divided by its l2 norm over the heads of each layer (Michel et al. 2019)."""
        if self.importance is None:
            return None
        norm = np.linalg.norm(self.importance, axis=1, keepdims=True)
        return np.divide(self.importance, norm, out=np.zeros_like(self.importance), where=norm > 0)


def _in_order(parts: list[Partial], field: str) -> tuple[np.ndarray, np.ndarray, list[Partial]]:
    """``(indices, values)`` of every text of ``parts``, sorted by corpus index, duplicates refused."""
    indices = np.concatenate([p.indices for p in parts])
    values = np.concatenate([getattr(p, field) for p in parts])
    order = np.argsort(indices, kind="stable")
    indices, values = indices[order], values[order]
    if len(indices) > 1 and (np.diff(indices) == 0).any():
        dup = int(indices[1:][np.diff(indices) == 0][0])
        raise HeadmapError(f"text {dup} appears in two partial results: combine each text's partial once")
    return indices, values, sorted(parts, key=lambda p: int(p.indices.min()))


def combine(partials: Iterable[Partial], spec: ReportSpec) -> Combined:
    """Exact corpus values from partials (see the module docstring); pure and order-independent."""
    parts = list(partials)
    stats_parts = [p for p in parts if p.sums is not None]
    if not stats_parts:
        raise HeadmapError("no partial results to combine: compute at least one text")
    indices, sums, ordered = _in_order(stats_parts, "sums")
    _, counts, _ = _in_order(stats_parts, "counts")
    total_sums, total_counts = sums.sum(0), counts.sum(0)  # [stat, layer, head], [stat, layer]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = total_sums / total_counts[..., None]
        per_text = sums / counts[..., None]  # [text, stat, layer, head], NaN where undefined
    defined = np.broadcast_to((counts > 0)[..., None], per_text.shape)
    n_defined = defined.sum(0)
    # Two-pass variance around the corpus mean of the text means (not the row-weighted mean).
    text_mean = np.where(defined, per_text, 0.0).sum(0) / np.maximum(n_defined, 1)
    centred = np.where(defined, per_text - text_mean[None], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.where(n_defined > 1, np.sqrt((centred**2).sum(0) / (n_defined - 1)), np.nan)
    js_parts = [p for p in ordered if p.js is not None]
    distances = None
    if spec.diversity and js_parts:
        covered = sum(len(p.indices) for p in js_parts)
        if covered != len(indices):
            raise HeadmapError("some partial results lack head distances: recompute them with diversity on")
        total = js_parts[0].js.copy()  # type: ignore[union-attr]  # every part carries JS sums when distances were asked
        for p in js_parts[1:]:
            total += p.js
        distances = unpack_upper(total / covered, spec.n_heads)
    importance, imp_texts = None, 0
    imp_parts = [p for p in parts if p.importance is not None]
    if imp_parts:
        imp_indices, grads, _ = _in_order(imp_parts, "importance")
        importance, imp_texts = grads.mean(0), len(imp_indices)
    n_tokens = int(np.concatenate([p.n_tokens for p in stats_parts]).sum())
    return Combined(
        spec=spec,
        indices=indices,
        n_tokens=n_tokens,
        n_rows=total_counts[spec.stats.index("entropy")],
        mean={name: means[i] for i, name in enumerate(spec.stats)},
        std={name: std[i] for i, name in enumerate(spec.stats)},
        distances=distances,
        importance=importance,
        importance_texts=imp_texts,
    )


__all__ = [
    "CORPUS_STATS",
    "Combined",
    "Partial",
    "ReportSpec",
    "combine",
    "pack_upper",
    "run_notes",
    "unpack_upper",
]
