"""Where a record's numbers came from: the model's files with their sha256, the software, the machine.

The files hashed are the ones a load reads: a bundled or local model folder's weights, config and
tokenizer files (``*.safetensors``, ``*.json``, ``*.txt``, ``*.model``, ``*.tiktoken``), or a
``.gguf`` file (it holds the weights and the tokenizer; the float32 copy headmap converts it to is
derived from it and the recorded versions, so it is not hashed). Hashes are streamed in chunks, so
a model of any size is read once without holding it in memory.
"""

from __future__ import annotations

import hashlib
import platform
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from headmap.errors import HeadmapError
from headmap.models import BUNDLED, LoadedModel, bundled_path
from headmap.models.devices import input_device

#: The suffixes of the files in a model folder that a load reads (weights, config, tokenizer).
MODEL_SUFFIXES = (".safetensors", ".json", ".txt", ".model", ".tiktoken", ".gguf")
#: Distributions whose versions change the numbers (or the rendering of them).
PACKAGES = ("headmap", "torch", "transformers", "tokenizers", "numpy", "captum", "safetensors", "matplotlib")
CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """The file's sha256 in hex, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    """The sha256 of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _folder_files(folder: Path) -> list[Path]:
    # Top level only: sub-folders of a model package (sentence-transformers' pooling) are not loaded.
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES)


def _hub_folder(repo_id: str) -> Path | None:
    """The local hub cache's snapshot of ``repo_id``, without asking the network."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means there is no local snapshot to hash
        return None


def model_files(loaded: LoadedModel, source: str | None = None) -> list[Path]:
    """The files behind ``loaded`` (loaded from ``source``, default its name), or [] when it has none
    (a model built in memory)."""
    source = source or loaded.name
    if source in BUNDLED:
        path = bundled_path(source)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            named = str(getattr(loaded.model.config, "_name_or_path", "") or "")
            path = Path(named) if named and Path(named).exists() else (_hub_folder(source) or path)
    if path.is_file():
        return [path.resolve()]
    if path.is_dir():
        return [p.resolve() for p in _folder_files(path)]
    return []


def hash_files(paths: Sequence[Path], role: str = "model") -> list[dict[str, Any]]:
    """One record per file: its path, size, sha256 and role (``model`` or ``calibration``)."""
    return [
        {"path": str(p), "bytes": p.stat().st_size, "sha256": sha256_file(p), "role": role} for p in paths
    ]


def check_files(files: Sequence[dict[str, Any]]) -> None:
    """Raise one :class:`HeadmapError` line for the first recorded file that is missing or changed
    (naming it and its expected sha256; how many more are bad follows in brackets)."""
    problems = []
    for record in files:
        path, expected = Path(str(record["path"])), str(record["sha256"])
        what = f"{record.get('role', 'model')} file {path}"
        if not path.is_file():
            problems.append(f"{what} is missing: expected sha256 {expected}")
            continue
        found = sha256_file(path)
        if found != expected:
            problems.append(f"{what} changed: expected sha256 {expected}, found {found}")
    if problems:
        more = f" (and {len(problems) - 1} more file(s))" if len(problems) > 1 else ""
        raise HeadmapError(problems[0] + more)


def versions() -> dict[str, str | None]:
    """The installed version of each of :data:`PACKAGES` (None where not installed) and Python's."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def runtime(loaded: LoadedModel) -> dict[str, Any]:
    """Where the numbers were computed: dtype, device, threads, platform."""
    param = next(loaded.model.parameters())
    return {
        "dtype": str(param.dtype).removeprefix("torch."),
        "device": str(input_device(loaded.model)),
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }


def provenance(
    loaded: LoadedModel, source: str | None, calibration: Path | None, command: Sequence[str] | None
) -> dict[str, Any]:
    """The provenance section of a record: files with sha256, versions, runtime and the command line."""
    files = hash_files(model_files(loaded, source))
    if calibration is not None:
        files += hash_files([Path(calibration).resolve()], role="calibration")
    return {
        "model": source or loaded.name,
        "files": files,
        "versions": versions(),
        "runtime": runtime(loaded),
        "command": list(command) if command is not None else list(sys.argv),
    }


__all__ = ["check_files", "model_files", "provenance", "sha256_file", "sha256_text", "versions"]
