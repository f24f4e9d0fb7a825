"""Save and load captured maps as safetensors: no pickles, readable from any language.

Layout: one float32 tensor per captured layer, named by its layer (``layer.3``, or ``encoder.0``,
``decoder.0``, ``cross.0`` for encoder-decoder models), shaped ``[head, query, key]``. The header
metadata (JSON strings) holds the model name, the tokens with their offsets and special flags,
the captured heads and query rows, and the model's layer and head counts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from headmap.errors import HeadmapError
from headmap.normalization import Normalization
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
        "normalization": result.normalization.caption,
        "notes": json.dumps(list(result.notes), ensure_ascii=False),
    }


def save_result(
    result: AttentionResult, path: str | Path, precision: str = "float32", topk: int | None = None
) -> Path:
    """Write ``result`` to ``path`` (``.safetensors``) and return the path.

    ``precision="float16"`` halves the file (relative error <= 2^-11 per weight); ``topk=K`` keeps
    only each row's K largest weights as ``{name}.values`` / ``{name}.indices`` (a fraction of the
    size for long inputs). The loss each one causes is measured and stored in the metadata, and
    reported in the loaded result's notes.
    """
    from safetensors.numpy import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise HeadmapError(
            f"captured maps are saved as .safetensors, not {path.suffix or 'no extension'!r}: rename {path}"
        )
    if not path.parent.is_dir():
        raise HeadmapError(f"cannot write {path}: the folder {path.parent} does not exist")
    if precision not in ("float32", "float16"):
        raise HeadmapError(f"precision must be float32 or float16, not {precision!r}")
    if topk is not None and topk < 1:
        raise HeadmapError(f"topk must be at least 1, not {topk}")
    tensors: dict[str, np.ndarray] = {}
    loss: dict[str, dict[str, float]] = {}
    for layer in result.layers:
        tensors.update(_encode_layer(layer, precision, topk, loss))
    meta = _metadata(result)
    meta["storage"] = json.dumps({"precision": precision, "topk": topk, "loss": loss})
    try:
        save_file(tensors, str(path), metadata=meta)
        follow_umask(path)
    except OSError as exc:
        raise HeadmapError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def follow_umask(path: Path, folder: bool = False) -> None:
    """Give ``path`` the mode that ``open()`` (or ``mkdir``) would under the umask.

    safetensors writes through a private temporary file (0600) and ``tempfile.mkdtemp`` makes 0700
    folders; every other output of headmap follows the umask, so these are brought in line.
    """
    # The umask can only be read by setting it: 0o077 meanwhile errs private, never public.
    umask = os.umask(0o077)
    os.umask(umask)
    os.chmod(path, (0o777 if folder else 0o666) & ~umask)


def _encode_layer(
    layer: LayerMap, precision: str, topk: int | None, loss: dict[str, dict[str, float]]
) -> dict[str, np.ndarray]:
    name, weights = layer.key.name, np.ascontiguousarray(layer.weights, dtype=np.float32)
    dtype = np.float16 if precision == "float16" else np.float32
    if topk is None or topk >= weights.shape[-1]:
        stored = weights.astype(dtype)
        if dtype is np.float16:
            loss[name] = {"max_abs_error": float(np.abs(stored.astype(np.float32) - weights).max())}
        return {name: stored}
    indices = np.argpartition(-weights, topk - 1, axis=-1)[..., :topk]
    values = np.take_along_axis(weights, indices, axis=-1)
    kept = values.astype(dtype)
    dense = _scatter(kept.astype(np.float32), indices, weights.shape[-1])
    loss[name] = {
        "max_dropped_mass": float((weights.sum(-1) - values.sum(-1)).max()),
        "max_abs_error": float(np.abs(dense - weights).max()),
    }
    index_type = np.int16 if weights.shape[-1] < 2**15 else np.int32
    return {f"{name}.values": kept, f"{name}.indices": indices.astype(index_type)}


def _scatter(values: np.ndarray, indices: np.ndarray, width: int) -> np.ndarray:
    dense = np.zeros((*values.shape[:-1], width), dtype=np.float32)
    np.put_along_axis(dense, indices.astype(np.int64), values, axis=-1)
    return dense


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
                raise HeadmapError(
                    f"{path} is a safetensors file but not one saved by headmap (no '{FORMAT}' marker)"
                )
            # safe_open handles are not iterable: their names come from keys().
            arrays = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except HeadmapError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a damaged header
        raise HeadmapError(
            f"{path} is not a readable safetensors file (corrupt or truncated): {exc}"
        ) from exc
    try:
        return _from_parts(meta, arrays)
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
        raise HeadmapError(
            f"{path} has damaged headmap metadata ({type(exc).__name__}: {exc}): capture it again"
        ) from exc


def _from_parts(meta: dict[str, str], arrays: dict[str, np.ndarray]) -> AttentionResult:
    heads, rows = json.loads(meta["heads"]), json.loads(meta["rows"])
    storage = json.loads(meta.get("storage", "{}")) or {}
    # Dense maps, or (values, indices) pairs of top-k storage still to be scattered.
    dense: dict[str, np.ndarray | tuple[np.ndarray, np.ndarray]] = {}
    for name, array in arrays.items():
        if name.endswith(".indices"):
            continue
        if name.endswith(".values"):
            base = name[: -len(".values")]
            dense[base] = (array, arrays[f"{base}.indices"])
        else:
            dense[name] = array.astype(np.float32, copy=False)
    source = Tokens.from_dict(json.loads(meta["source"]))
    target_dict = json.loads(meta["target"])
    target = Tokens.from_dict(target_dict) if target_dict else None
    layers = []
    for name in sorted(dense, key=lambda n: LayerKey.parse(n).sort_key):
        key = LayerKey.parse(name)
        weights = dense[name]
        if isinstance(weights, tuple):
            n_keys = len(target if key.stack is Stack.DECODER and target else source)
            weights = _scatter(weights[0].astype(np.float32), weights[1], n_keys)
        layers.append(LayerMap(key, tuple(heads[name]), tuple(rows[name]), weights))
    notes = list(json.loads(meta.get("notes", "[]")))
    if storage.get("precision") == "float16" or storage.get("topk"):
        worst = max((v.get("max_abs_error", 0.0) for v in storage.get("loss", {}).values()), default=0.0)
        kind = f"top-{storage['topk']} per row" if storage.get("topk") else "float16"
        notes.append(f"stored as {kind} ({storage.get('precision')}): max abs error {worst:.2g}")
    result = AttentionResult(
        model=meta["model"],
        source=source,
        target=target,
        layers=tuple(layers),
        num_layers={Stack(s): int(n) for s, n in json.loads(meta["num_layers"]).items()},
        num_heads=int(meta["num_heads"]),
        normalization=Normalization.from_caption(meta.get("normalization", "raw")),
        notes=tuple(notes),
    )
    for layer in result.layers:
        if layer.weights.shape[2] != len(result.key_tokens(layer.key)):
            raise ValueError(
                f"{layer.key.name} has {layer.weights.shape[2]} keys for {len(result.key_tokens(layer.key))} tokens"
            )
    return result
