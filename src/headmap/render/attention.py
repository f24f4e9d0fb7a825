"""The report contract for :class:`~headmap.result.AttentionResult`, which lives below this stage.

``AttentionResult`` cannot inherit :class:`~headmap.render.report.Report` (the core stage never
imports render), so it is registered here as a virtual subclass and ``headmap/__init__`` binds the
functions below into its :class:`~headmap.result.Stages`: ``save`` goes through the one writer
(:func:`headmap.render.report.write`), ``page`` is the interactive view.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from headmap.render.image_view import image_page
from headmap.render.interactive import interactive_html
from headmap.render.report import COMMON, Format, Report, json_number
from headmap.result import AttentionResult, LayerKey

#: Every format an AttentionResult writes: the common ones, its long table and its raw maps.
ATTENTION_FORMATS = (*COMMON, Format.PARQUET, Format.SAFETENSORS)

Report.register(AttentionResult)


def attention_formats(result: AttentionResult) -> tuple[Format, ...]:
    """``AttentionResult.formats()``: the same for every result."""
    return ATTENTION_FORMATS


def attention_page(
    result: AttentionResult,
    layer: int | str | LayerKey | None = None,
    head: int | None = None,
    **options: Any,
) -> str:
    """``AttentionResult.page()``: the interactive view (the notebook display), starting at ``layer``/``head``;
    an image result's is drawn over the image (hover a patch to look from it; ``matrix=True``: the
    ``[query, key]`` heatmaps, as for text)."""
    if result.source.patches is not None and not options.pop("matrix", False):
        return image_page(result, layer, head, **options)
    options.pop("matrix", None)
    return interactive_html(result, layer, head, **options)


__all__ = ["ATTENTION_FORMATS", "attention_formats", "attention_page"]


def attention_dict(result: AttentionResult) -> dict[str, Any]:
    """``result.to_dict()``: everything it holds, JSON-safe (undefined weights become None)."""
    return {
        "model": result.model,
        "source": result.source.to_dict(),
        "target": result.target.to_dict() if result.target is not None else None,
        "num_layers": {stack.value: n for stack, n in result.num_layers.items()},
        "num_heads": result.num_heads,
        "normalization": result.normalization.caption,
        "notes": list(result.notes),
        "layers": [
            {
                "layer": layer.key.name,
                "heads": list(layer.heads),
                "rows": list(layer.rows),
                "weights": _nested(layer.weights),
            }
            for layer in result.layers
        ],
    }


def _nested(weights: np.ndarray[Any, Any]) -> list[Any]:
    """``weights`` as nested lists of floats, None where undefined (JSON has no NaN)."""
    values = weights.astype(np.float64)
    if np.isfinite(values).all():
        nested: list[Any] = values.tolist()
        return nested
    return [_nested(v) if v.ndim else json_number(v) for v in values]


def attention_table(result: AttentionResult) -> pd.DataFrame:
    """``result.to_pandas()``: one row per weight (``layer`` name, ``head``, ``query``, ``key``, ``weight``)."""
    frames = []
    for layer in result.layers:
        n_keys = layer.weights.shape[-1]
        head, row, key = np.meshgrid(
            np.asarray(layer.heads), np.asarray(layer.rows), np.arange(n_keys), indexing="ij"
        )
        frames.append(
            pd.DataFrame(
                {
                    "layer": layer.key.name,
                    "head": head.ravel(),
                    "query": row.ravel(),
                    "key": key.ravel(),
                    "weight": layer.weights.ravel(),
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=["layer", "head", "query", "key", "weight"])
    return pd.concat(frames, ignore_index=True)
