"""Save a cut model as a safetensors folder that ``headmap.load`` (and ``headmap capture``) accept.

The folder holds ``config.json`` (with the per-layer head layout under
:data:`headmap.models.pruned.CONFIG_KEY`, which :func:`headmap.load` re-applies before the weights
load), ``model.safetensors`` (never a pickle; a tied output embedding is stored once, as the input
embedding), the tokenizer files, the generation config of decoders, and ``headmap_pruning.json``:
the record of what was removed and what it cost. It is written to a temporary sibling folder and
renamed into place, so an interrupted save never leaves a half-written folder behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from headmap.errors import HeadmapError
from headmap.models import LoadedModel
from headmap.models.pruned import is_pruned
from headmap.storage import follow_umask

RECORD = "headmap_pruning.json"


def _state(model) -> dict:
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    output, inputs = model.get_output_embeddings(), model.get_input_embeddings()
    # safetensors refuses two names for one storage: keep the input embedding, loading re-ties it.
    if output is not None and inputs is not None and output.weight is inputs.weight:
        for name, module in model.named_modules():
            if module is output:
                state.pop(f"{name}.weight", None)
    return state


def save_pruned(model: LoadedModel, folder: str | Path, record: dict) -> Path:
    """Write the cut ``model`` and ``record`` (JSON-ready) into the new folder ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    if not is_pruned(model.model.config):
        raise HeadmapError(
            "this model has no pruned-head layout: cut it with headmap.apps.prune.prune_heads first"
        )
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise HeadmapError(f"{folder} already exists and is not an empty folder: choose a new --out folder")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    except OSError as exc:
        raise HeadmapError(f"cannot create {folder}: {exc.strerror or exc}") from None
    try:
        net = model.model
        net.config.architectures = [type(net).__name__]
        net.config.save_pretrained(tmp)
        if getattr(net, "generation_config", None) is not None and net.can_generate():
            net.generation_config.save_pretrained(tmp)
        save_file(_state(net), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        follow_umask(tmp / "model.safetensors")
        follow_umask(tmp, folder=True)
        model.tokenizer.save_pretrained(tmp)  # type: ignore[attr-defined]  # LoadedModel.tokenizer is typed as object (any fast tokenizer)
        (tmp / RECORD).write_text(
            json.dumps(record, indent=1, ensure_ascii=False, allow_nan=False), encoding="utf-8"
        )
        if folder.exists():
            folder.rmdir()
        tmp.rename(folder)
    except OSError as exc:
        raise HeadmapError(f"cannot write {folder}: {exc.strerror or exc}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def read_record(folder: str | Path) -> dict:
    """The ``headmap_pruning.json`` record of a saved pruned folder."""
    path = Path(folder) / RECORD
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HeadmapError(f"cannot read {path}: {exc}") from None


__all__ = ["RECORD", "read_record", "save_pruned"]
