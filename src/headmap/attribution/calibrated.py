"""Calibrated attention (AT2, Cohen-Wang, Chuang & Madry 2025): one non-negative weight per
(layer, head), learned once per model from ablations (:mod:`headmap.attribution.calibrate`),
turns one forward's attention into an attribution.

Features: for every (layer, head), the attention from the explained row(s) to each key token
(the explained position's row; the mean of all rows for a pooled output), captured as a stream of
those rows only (never N x N). A unit's (word's, chunk's) features are the sum over its tokens, so
its calibrated score, ``features . w``, is the sum of its tokens' scores.

The weights live in a small safetensors file with the model's fingerprint (a hash of its config
and parameter shapes); loading it for another model is refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from headmap.attribution.base import Attribution, Problem
from headmap.capture import capture
from headmap.errors import HeadmapError
from headmap.models import LoadedModel
from headmap.result import AttentionResult

FORMAT = "headmap.calibration/1"


def token_features(problem: Problem) -> np.ndarray:
    """``[token, layer, head]``: attention from the explained row(s) to each token, every head.

    One forward; only the explained rows are captured (``capture(..., rows=...)``).
    """
    weights = problem.target.query_weights(problem.n)
    rows = [int(r) for r in np.flatnonzero(weights)]
    result = capture(problem.loaded, problem.tokens.text, rows=rows)
    assert isinstance(result, AttentionResult)
    if result.source.tokens != problem.tokens.tokens:
        raise HeadmapError("the capture tokenized the text differently from the explanation")
    if len({k.stack for k in result.keys}) > 1:
        raise HeadmapError("calibrated attention supports one attention stack (not encoder-decoder models)")
    heads = max(len(layer.heads) for layer in result.layers)
    out = np.zeros((problem.n, len(result.layers), heads))
    for li, layer in enumerate(result.layers):
        picked = weights[np.asarray(layer.rows, dtype=np.int64)]  # [row]
        # [head, row, key] -> [key, head]
        out[:, li, : len(layer.heads)] = np.einsum("r,hrk->kh", picked, layer.weights.astype(np.float64))
    return out


def unit_features(tokens: np.ndarray, units: Sequence[Sequence[int]]) -> np.ndarray:
    """``[unit, layer, head]``: the sum of each unit's token features."""
    out = np.zeros((len(units), *tokens.shape[1:]))
    for u, unit in enumerate(units):
        out[u] = tokens[list(unit)].sum(0)
    return out


def model_hash(loaded: LoadedModel) -> str:
    """A fingerprint of the model: its config (without private and dtype entries) and its
    parameter names and shapes. Same architecture and checkpoint -> same hash, any device/dtype."""
    config = loaded.model.config.to_dict()
    clean = {
        k: v
        for k, v in sorted(config.items())
        if not k.startswith("_") and k not in ("torch_dtype", "dtype", "transformers_version")
    }
    shapes = [(name, list(p.shape)) for name, p in loaded.model.named_parameters()]
    blob = json.dumps([clean, shapes], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class Calibration:
    """Weights ``[layer, head]`` (non-negative) and what they were learned from (``meta``)."""

    weights: np.ndarray
    meta: dict[str, object] = field(default_factory=dict)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """``[unit]`` from ``[unit, layer, head]`` features: ``features . w``."""
        if features.shape[1:] != self.weights.shape:
            raise HeadmapError(
                f"features of {features.shape[1:]} (layer, head) do not match the calibration's "
                f"{self.weights.shape}"
            )
        return np.tensordot(features, self.weights, axes=([1, 2], [0, 1]))

    def check_target(self, kind: str) -> None:
        """Refuse an output of another kind than the one learned (``next-token``, ``cosine``, ...)."""
        settings = self.meta.get("settings")
        learned = settings.get("target_kind") if isinstance(settings, dict) else None
        if learned and learned != kind:
            raise HeadmapError(
                f"this calibration was learned on {learned} outputs, not {kind}: run `headmap calibrate` "
                + ("with --compare or --compare-next" if kind == "cosine" else "without --compare")
            )

    def check(self, loaded: LoadedModel) -> None:
        """Refuse a model other than the one calibrated (by :func:`model_hash`)."""
        want, got = self.meta.get("model_hash"), model_hash(loaded)
        if want != got:
            raise HeadmapError(
                f"this calibration is for model {self.meta.get('model')!r} (hash {want}), not "
                f"{loaded.name!r} (hash {got}): run `headmap calibrate` for this model"
            )

    def save(self, path: str | Path) -> Path:
        """Write a safetensors file: the tensor ``weights`` and the metadata (JSON strings)."""
        from safetensors.numpy import save_file

        out = Path(path)
        meta = {"format": FORMAT, **{k: json.dumps(v) for k, v in self.meta.items()}}
        save_file({"weights": np.ascontiguousarray(self.weights, dtype=np.float32)}, str(out), metadata=meta)
        return out


def load_calibration(path: str | Path, model: LoadedModel | None = None) -> Calibration:
    """Read a file written by :meth:`Calibration.save`; with ``model``, refuse another model."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            raw = f.metadata() or {}
            weights = f.get_tensor("weights")
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        raise HeadmapError(f"cannot read calibration {path}: {exc}") from exc
    if raw.get("format") != FORMAT:
        raise HeadmapError(f"{path} is not a headmap calibration (format {raw.get('format')!r})")
    meta = {k: json.loads(v) for k, v in raw.items() if k != "format"}
    calibration = Calibration(weights.astype(np.float64), meta)
    if model is not None:
        calibration.check(model)
    return calibration


def as_calibration(value: Calibration | str | Path, model: LoadedModel) -> Calibration:
    """A :class:`Calibration` (loaded from a path), checked against ``model``."""
    calibration = value if isinstance(value, Calibration) else load_calibration(value)
    calibration.check(model)
    return calibration


@dataclass(frozen=True)
class Calibrated:
    """Calibrated attention: per token, ``sum over (layer, head) of w x attention`` from the
    explained row(s). Scores are non-negative (estimated drops of the output); one forward."""

    calibration: Calibration
    name: str = "calibrated"

    def attribute(self, problem: Problem) -> Attribution:
        self.calibration.check(problem.loaded)
        self.calibration.check_target(problem.target.kind)
        features = token_features(problem)
        return Attribution(
            self.name,
            self.calibration.predict(features),
            signed=False,
            info={
                "calibration": {
                    k: self.calibration.meta.get(k) for k in ("model", "corpus_hash", "heldout", "settings")
                }
            },
        )
