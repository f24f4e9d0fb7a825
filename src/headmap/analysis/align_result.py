"""Alignment of a transcript with its audio as one result (:func:`align`, :class:`Alignment`).

From a speech model's capture with cross layers (:func:`align_result`, or :func:`align` from a
model and a clip): the alignment heads (found by
:func:`~headmap.analysis.alignment.alignment_heads`, or given), their mean cross-attention over the
audible frames, each token's span in seconds (DTW through Whisper's preparation of those heads:
standardized per frame, median-filtered over time), and the words with their spans, merged from
the tokens as Whisper's own word timestamps merge them.

``weights`` is the heads' *raw* mean, the weights the model computed (what the picture draws); the
timings come from the prepared weights, as in Whisper. Heads of a model not trained for alignment
(a random or fine-tuned model) give timings that need not match speech at all.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from headmap.analysis.alignment import (
    AlignmentHead,
    Word,
    alignment_heads,
    head_score,
    token_times,
    word_times,
)
from headmap.analysis.report_html import figure_img
from headmap.capture import Audio, capture
from headmap.capture.discovery import discover
from headmap.errors import HeadmapError
from headmap.models import LoadedModel, load
from headmap.render.frames import plot_time
from headmap.render.report import Report, check_writable, format_number, json_numbers, write
from headmap.result import CAUSATION_WARNING, AttentionResult, LayerKey, Stack

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Alignment", "align", "align_result"]

#: How the timings read the heads, said in every output.
PREPARATION = (
    "token times: DTW through the heads' cross-attention standardized per frame and median-filtered "
    "over time (Whisper's preparation); the picture: their raw mean"
)
#: Said wherever the heads were found rather than given.
FOUND_NOTE = (
    "alignment heads found by how closely each head's attention follows its own monotonic path; "
    "unless the model is a Whisper trained for alignment, they need not follow speech"
)

HeadSpec = tuple[int | str | LayerKey, int]


@dataclass(frozen=True)
class Alignment(Report):
    """Tokens and words of a transcript placed in time by a speech model's alignment heads.

    ``weights`` ``[tokens, frames]``: the raw mean cross-attention of ``heads`` over the audible
    frames (of ``seconds`` each); ``token_times`` ``[tokens, 2]`` and each word's ``start``/``end``:
    seconds. The report contract (:class:`~headmap.render.report.Report`): ``save`` writes ``.json``,
    ``.html``, pictures, ``.parquet`` and ``.csv`` (the word table, :meth:`to_pandas`).
    """

    model: str
    clip: str
    seconds: float
    heads: tuple[AlignmentHead, ...]
    found: bool  # whether the heads were found (True) or given
    tokens: tuple[str, ...]
    weights: np.ndarray
    token_times: np.ndarray
    words: tuple[Word, ...]
    filter_width: int = 7

    tabular: ClassVar[bool] = True

    @property
    def duration(self) -> float:
        """Seconds of audible clip the alignment covers."""
        return float(self.weights.shape[-1] * self.seconds)

    def notes(self) -> list[str]:
        """What every output says about how the numbers were made."""
        return [PREPARATION, *([FOUND_NOTE] if self.found else [])]

    def to_pandas(self) -> pd.DataFrame:
        """One row per word: ``word``, ``start`` and ``end`` (seconds), its ``first_token`` and
        ``last_token`` (indices into :attr:`tokens`)."""
        rows = [(w.word, w.start, w.end, w.tokens[0], w.tokens[-1]) for w in self.words]
        return pd.DataFrame(rows, columns=["word", "start", "end", "first_token", "last_token"])

    def token_table(self) -> pd.DataFrame:
        """One row per target token (the start token first): ``token``, ``start`` and ``end`` (seconds)."""
        return pd.DataFrame(
            {"token": self.tokens, "start": self.token_times[:, 0], "end": self.token_times[:, 1]}
        )

    def to_dict(self) -> dict[str, Any]:
        """Heads, tokens, words and the mean map, JSON-safe, with how they were made and the caveat."""
        return {
            "model": self.model,
            "clip": self.clip,
            "seconds_per_frame": self.seconds,
            "audible_frames": int(self.weights.shape[-1]),
            "filter_width": self.filter_width,
            "heads_found": self.found,
            "heads": [
                {"layer": h.key.name, "head": h.head, "score": json_numbers([h.score])[0]} for h in self.heads
            ],
            "tokens": [
                {"token": t, "start": float(a), "end": float(b)}
                for t, (a, b) in zip(self.tokens, self.token_times)
            ],
            "words": [
                {"word": w.word, "tokens": list(w.tokens), "start": w.start, "end": w.end} for w in self.words
            ],
            "weights": [json_numbers(row) for row in self.weights],
            "notes": self.notes(),
            "warning": CAUSATION_WARNING,
        }

    def figure(self, cmap: str = "viridis", **options: Any) -> Figure:
        """The heads' mean cross-attention over time (seconds along x), each word's span outlined and
        labelled over its tokens' rows."""
        spans = [(w.word, w.tokens[0], w.tokens[-1], w.start, w.end) for w in self.words]
        what = ", ".join(f"{h.key.name}/{h.head}" for h in self.heads)
        title = f"{self.model}\nalignment: mean of {len(self.heads)} heads ({what})"
        return plot_time(
            self.weights, self.tokens, self.seconds, title, words=spans, cmap=cmap, notes=self.notes()
        )

    def summary(self) -> str:
        """The heads with their scores and the word table, as the command line prints them."""
        lines = [
            f"{self.model}: {self.clip or 'the clip'}, {self.duration:.2f} s audible, {len(self.words)} words"
        ]
        lines.append(
            "alignment heads (layer/head score):" if self.found else "given heads (layer/head score):"
        )
        lines += [f"  {h.key.name}/{h.head}  {format_number(h.score)}" for h in self.heads]
        width = max([4, *(len(w.word) for w in self.words)])
        lines.append(f"  {'word':<{width}}  {'start':>7}  {'end':>7}")
        lines += [f"  {w.word:<{width}}  {w.start:7.2f}  {w.end:7.2f}" for w in self.words]
        lines.append(f"# {PREPARATION}. {CAUSATION_WARNING}")
        return "\n".join(lines)

    def page(self, **options: Any) -> str:
        """The heads, the picture and the word table as one HTML fragment (every token escaped)."""
        heads = "".join(
            f"<tr><td>{html.escape(h.key.name)}</td><td>{h.head}</td><td>{format_number(h.score)}</td></tr>"
            for h in self.heads
        )
        words = "".join(
            f"<tr><td>{html.escape(w.word)}</td><td>{w.start:.2f}</td><td>{w.end:.2f}</td></tr>"
            for w in self.words
        )
        notes = "".join(f"<p>{html.escape(n)}</p>" for n in self.notes())
        picture = figure_img(self.figure(**options), "alignment over time")
        return (
            f"<div><p>{html.escape(self.model)}: {html.escape(self.clip or 'the clip')}, "
            f"{self.duration:.2f} s audible, {len(self.words)} words</p>"
            f"<table><tr><th>layer</th><th>head</th><th>score</th></tr>{heads}</table>{picture}"
            f"<table><tr><th>word</th><th>start (s)</th><th>end (s)</th></tr>{words}</table>"
            f"{notes}<p><em>{html.escape(CAUSATION_WARNING)}</em></p></div>"
        )

    def save(self, path: str | Path, **options: Any) -> Path:
        """Write by extension (see :meth:`formats`), and ``.csv``: the word table."""
        path = Path(path)
        if path.suffix.lower() != ".csv":
            return write(self, path, **options)
        check_writable(path)
        self.to_pandas().to_csv(path, index=False)
        return path

    def _title(self) -> str:
        return f"headmap: {self.model} alignment"

    def __repr__(self) -> str:
        return self.summary()


def _chosen(result: AttentionResult, heads: Sequence[HeadSpec]) -> list[tuple[LayerKey, int]]:
    """``(layer, head)`` pairs checked against the capture (a bare number names a cross layer)."""
    chosen = []
    for layer, head in heads:
        key = result.resolve(layer, Stack.CROSS)
        if key.stack is not Stack.CROSS:
            raise HeadmapError(
                f"{key.name} is no cross-attention layer: give heads of layers such as cross.0"
            )
        if key not in result.keys:
            raise HeadmapError(
                f"{key.name} was not captured: capture it, or give heads of {result.keys[0].name}"
            )
        if head not in result.layer(key).heads:
            raise HeadmapError(
                f"head {head} of {key.name} was not captured: give one of {list(result.layer(key).heads)}"
            )
        chosen.append((key, int(head)))
    if not chosen:
        raise HeadmapError("no heads given: pass (layer, head) pairs, or heads=None to find them")
    return chosen


def align_result(
    result: AttentionResult, top: int = 5, heads: Sequence[HeadSpec] | None = None, filter_width: int = 7
) -> Alignment:
    """The alignment of ``result`` (a speech model's capture of one clip with a target text and cross
    layers): the ``top`` alignment heads found, or ``heads`` given as ``(layer, head)`` pairs."""
    frames = result.source.frames
    if frames is None or result.target is None:
        raise HeadmapError(
            "alignment needs a speech model's capture of a clip with a target: "
            "headmap.capture(model, audio, target=TEXT)"
        )
    if top < 1:
        raise HeadmapError(f"top must be at least 1, not {top}")
    cross = [layer for layer in result.layers if layer.key.stack is Stack.CROSS]
    if any(layer.rows != tuple(range(len(result.target))) for layer in cross):
        raise HeadmapError("alignment needs every target token's row: capture with rows=None")
    audible = max(1, frames.audible)
    if heads is None:
        found = alignment_heads(result, top, audible, filter_width=filter_width)
    else:
        found = [
            AlignmentHead(key, head, head_score(result.layer(key).head(head)[:, :audible], 2, filter_width))
            for key, head in _chosen(result, heads)
        ]
    stack = np.stack([result.layer(h.key).head(h.head)[:, :audible] for h in found]).astype(np.float64)
    times = token_times(stack, frames.seconds, filter_width)
    return Alignment(
        model=result.model,
        clip=result.source.text,
        seconds=frames.seconds,
        heads=tuple(found),
        found=heads is None,
        tokens=result.target.tokens,
        weights=stack.mean(axis=0),
        token_times=times,
        words=tuple(word_times(result.target, times)),
        filter_width=filter_width,
    )


def align(
    model: LoadedModel | str | AttentionResult,
    audio: Audio | str | os.PathLike[str] | None = None,
    target: str | None = None,
    *,
    top: int = 5,
    heads: Sequence[HeadSpec] | None = None,
    filter_width: int = 7,
) -> Alignment:
    """Capture a speech ``model``'s cross layers on ``audio`` (a clip or a WAV path) with the transcript
    ``target``, then :func:`align_result` it; given a capture instead of a model, align that capture.

    ``heads``: ``(layer, head)`` pairs to use (e.g. a real Whisper's published alignment heads);
    default: the ``top`` heads found. ``filter_width``: the median filter over time, in frames.
    """
    if isinstance(model, AttentionResult):
        if audio is not None or target is not None:
            raise HeadmapError("a capture is aligned as it is: give only top=, heads= or filter_width=")
        return align_result(model, top, heads, filter_width)
    if audio is None or target is None:
        raise HeadmapError("alignment needs a clip and its transcript: align(model, audio, target=TEXT)")
    loaded = model if isinstance(model, LoadedModel) else load(model)
    arch = discover(loaded.model)
    if arch.audio_frames is None:
        raise HeadmapError(
            f"{loaded.name} is no speech model: alignment needs one such as Whisper (a folder with its feature extractor)"
        )
    clip = Path(audio) if isinstance(audio, (str, os.PathLike)) else audio
    layers = [f"cross.{i}" for i in range(arch.num_layers[Stack.CROSS])]
    result = capture(loaded, clip, layers=layers, target=target)  # type: ignore[arg-type]  # capture takes clips; its Input type names texts and images
    assert isinstance(result, AttentionResult)  # one clip in, one result out
    return align_result(result, top, heads, filter_width)
