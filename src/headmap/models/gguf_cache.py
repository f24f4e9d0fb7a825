"""Convert a GGUF model once to a float32 safetensors folder in the user cache, then reuse it.

transformers parses GGUF metadata in pure Python and dequantizes every tensor (~20 s for
SmolLM2-135M); the converted copy reloads in well under a second with identical weights.
"""

from __future__ import annotations

import copy
import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel

from headmap.errors import HeadmapError
from headmap.models.cache import cache_root

#: Bumped whenever the layout of a converted folder changes, so stale copies are rebuilt.
CACHE_VERSION = 2


def _fingerprint(gguf: Path) -> str:
    # Name, size and mtime identify the file well enough without hashing hundreds of MB.
    stat = gguf.stat()
    key = f"{CACHE_VERSION}|{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def converted_folder(gguf: Path, cache_dir: str | Path | None = None) -> Path:
    """The safetensors folder for ``gguf``, converting it first if the cache has none."""
    target = cache_root(cache_dir) / f"{gguf.stem}-{_fingerprint(gguf)}"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HeadmapError(
            f"cannot create the cache folder {target.parent}: {exc.strerror}; set XDG_CACHE_HOME"
        ) from exc
    _convert(gguf, target)
    return target


def _convert(gguf: Path, target: Path) -> None:
    import transformers

    try:
        import gguf as _gguf  # noqa: F401  (transformers needs it; fail with a clear message first)
    except ImportError as exc:
        raise HeadmapError("reading GGUF files needs the gguf package: pip install gguf accelerate") from exc
    folder, name = str(gguf.parent), gguf.name
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise HeadmapError(
            f"cannot read GGUF file {gguf}: {str(exc).splitlines()[0] if str(exc) else exc!r}"
        ) from exc
    # Write to a temporary sibling and rename, so an interrupted conversion never leaves a
    # half-written folder that later loads would trust.
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        _save_float_copy(model, tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _save_float_copy(model: PreTrainedModel, folder: Path) -> None:
    """Save dequantized weights and a config without the GGUF quantization entry.

    ``save_pretrained`` refuses GGUF-loaded models although their weights are already plain
    float32 tensors; ``save_model`` also drops the tied copy of the embedding.
    """
    from safetensors.torch import save_file

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # GGUF configs name no architecture; without one the copy would reload as a bare base model.
    config.architectures = [type(model).__name__]
    config.save_pretrained(folder)
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    # A tied output embedding is the input embedding again: keep the input one, which loading
    # re-ties, since safetensors refuses two names for one storage.
    output, inputs = model.get_output_embeddings(), model.get_input_embeddings()
    if output is not None and inputs is not None and output.weight is inputs.weight:
        tied = [n for n, m in model.named_modules() if m is output]
        for name in tied:
            state.pop(f"{name}.weight", None)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
