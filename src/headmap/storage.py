"""Save and load captured maps as safetensors: no pickles, readable from any language.

Layout: one float32 tensor per captured layer, named by its layer (``layer.3``, or ``encoder.0``,
``decoder.0``, ``cross.0`` for encoder-decoder models), shaped ``[head, query, key]``. The header
metadata (JSON strings) holds the model name, the tokens with their offsets and special flags,
the captured heads and query rows, and the model's layer and head counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from headmap.errors import HeadmapError
from headmap.result import AttentionResult, LayerKey, LayerMap, Stack
from headmap.tokens import Tokens

FORMAT = "headmap/1"


def _metadata(result: AttentionResult) -> dict[str, str]:
    return {
        "format": FORMAT,
        "model": result.model,
        "source": json.dumps(result.source.to_dict(), ensure_ascii=False),
        "target": json.dumps(result.target.to_dict() if result.target else None, ensure_ascii=False),
        "heads": json.dumps({layer.key.name: list(layer.heads) for layer in result.layers}),
        "rows": json.dumps({layer.key.name: list(layer.rows) for layer in result.layers}),
        "num_layers": json.dumps({stack.value: n for stack, n in result.num_layers.items()}),
        "num_heads": str(result.num_heads),
        "normalization": result.normalization,
        "notes": json.dumps(list(result.notes), ensure_ascii=False),
    }


def save_result(result: AttentionResult, path: str | Path) -> Path:
    """Write ``result`` to ``path`` (``.safetensors``) and return the path."""
    from safetensors.numpy import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise HeadmapError(f"captured maps are saved as .safetensors, not {path.suffix or 'no extension'!r}: rename {path}")
    if not path.parent.is_dir():
        raise HeadmapError(f"cannot write {path}: the folder {path.parent} does not exist")
    tensors = {layer.key.name: np.ascontiguousarray(layer.weights, dtype=np.float32) for layer in result.layers}
    try:
        save_file(tensors, str(path), metadata=_metadata(result))
    except OSError as exc:
        raise HeadmapError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def load_result(path: str | Path) -> AttentionResult:
    """Read a file written by :func:`save_result`; a corrupt or foreign file raises :class:`HeadmapError`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise HeadmapError(f"{path} does not exist")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            meta = handle.metadata() or {}
            if meta.get("format") != FORMAT:
                raise HeadmapError(f"{path} is a safetensors file but not one saved by headmap (no '{FORMAT}' marker)")
            arrays = {name: handle.get_tensor(name) for name in handle.keys()}
    except HeadmapError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a damaged header
        raise HeadmapError(f"{path} is not a readable safetensors file (corrupt or truncated): {exc}") from exc
    try:
        return _from_parts(meta, arrays)
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
        raise HeadmapError(f"{path} has damaged headmap metadata ({type(exc).__name__}: {exc}): capture it again") from exc


def _from_parts(meta: dict[str, str], arrays: dict[str, np.ndarray]) -> AttentionResult:
    heads, rows = json.loads(meta["heads"]), json.loads(meta["rows"])
    layers = []
    for name in sorted(arrays, key=lambda n: LayerKey.parse(n).sort_key):
        weights = arrays[name]
        if weights.dtype != np.float32:
            weights = weights.astype(np.float32)
        layers.append(LayerMap(LayerKey.parse(name), tuple(heads[name]), tuple(rows[name]), weights))
    target = json.loads(meta["target"])
    result = AttentionResult(
        model=meta["model"],
        source=Tokens.from_dict(json.loads(meta["source"])),
        target=Tokens.from_dict(target) if target else None,
        layers=tuple(layers),
        num_layers={Stack(s): int(n) for s, n in json.loads(meta["num_layers"]).items()},
        num_heads=int(meta["num_heads"]),
        normalization=meta.get("normalization", "raw"),
        notes=tuple(json.loads(meta.get("notes", "[]"))),
    )
    for layer in result.layers:
        if layer.weights.shape[2] != len(result.key_tokens(layer.key)):
            raise ValueError(f"{layer.key.name} has {layer.weights.shape[2]} keys for {len(result.key_tokens(layer.key))} tokens")
    return result
