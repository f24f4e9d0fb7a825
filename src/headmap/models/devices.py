"""Devices and dtypes: what ``headmap.load`` accepts, and where a loaded model wants its inputs.

A model lives on one device (``device="cuda"``), or is spread by accelerate over several devices,
the CPU and the disk (``device_map="auto"`` or a dict). Under a device map the offloaded modules
hold ``meta`` tensors between forwards and accelerate's hooks bring their weights to the execution
device as each module runs, so neither ``model.device`` nor the first parameter says where inputs
go: :func:`input_device` does, and every stage of headmap that builds inputs uses it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

import torch

from headmap.errors import HeadmapError

#: The dtype names ``headmap.load`` and ``--dtype`` accept; "auto" keeps the checkpoint's own dtype.
DTYPES: dict[str, torch.dtype | str] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "auto": "auto",
    "float64": torch.float64,  # for exact comparisons; the command line offers the four above
}
#: Short spellings of the same dtypes.
_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
#: The strings accelerate takes as a whole-model ``device_map``.
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")

DeviceMap = str | Mapping[str, int | str | torch.device]


def parse_dtype(value: torch.dtype | str | None) -> torch.dtype | str:
    """``"bfloat16"`` or ``torch.bfloat16`` -> ``torch.bfloat16``; ``"auto"`` stays ``"auto"``; None is float32."""
    if value is None:
        return torch.float32
    if isinstance(value, torch.dtype):
        if value not in DTYPES.values():
            raise HeadmapError(f"unsupported dtype {value}: use one of {', '.join(DTYPES)}")
        return value
    name = str(value).strip().lower().removeprefix("torch.")
    name = _ALIASES.get(name, name)
    if name not in DTYPES:
        raise HeadmapError(f"unknown dtype {value!r}: use one of {', '.join(DTYPES)}")
    return DTYPES[name]


def parse_device(value: str | int | torch.device | None) -> torch.device | None:
    """``"cuda:1"``, ``1`` or ``torch.device("cuda", 1)`` -> a device that exists here, or a clear error."""
    if value is None:
        return None
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        raise HeadmapError(f"unknown device {value!r}: use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise HeadmapError("no CUDA device: torch.cuda.is_available() is False; use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise HeadmapError(
                f"no CUDA device {device.index}: this machine has {count} (cuda:0..cuda:{count - 1})"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise HeadmapError("no MPS device: torch.backends.mps.is_available() is False; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps", "xpu"):
        raise HeadmapError(f"unsupported device {value!r}: use cpu, cuda, cuda:N or mps")
    return device


def check_placement(
    device: torch.device | None,
    device_map: DeviceMap | None,
    max_memory: Mapping[int | str, int | str] | None,
    offload_folder: object | None,
) -> None:
    """Refuse contradictory or impossible placements before anything is read from disk."""
    if device_map is None:
        if max_memory is not None or offload_folder is not None:
            raise HeadmapError(
                "max_memory and offload_folder place a model by its device_map: give device_map too"
            )
        return
    if device is not None:
        raise HeadmapError(
            "give device or device_map, not both: device puts the whole model on one device, "
            "device_map spreads it over several (accelerate)"
        )
    if importlib.util.find_spec("accelerate") is None:
        raise HeadmapError("device_map needs the accelerate package: pip install accelerate")
    if isinstance(device_map, str):
        if device_map not in DEVICE_MAPS:
            raise HeadmapError(
                f"unknown device_map {device_map!r}: use one of {', '.join(DEVICE_MAPS)}, "
                "or a dict of module names to devices"
            )
        return
    if not isinstance(device_map, Mapping) or not device_map:
        raise HeadmapError(
            "device_map takes 'auto' or a dict of module names to devices ('cpu', 'disk', 0...)"
        )
    if "disk" in device_map.values() and offload_folder is None:
        raise HeadmapError(
            "device_map puts modules on 'disk': give offload_folder, a folder for their weights"
        )
    for place in set(device_map.values()):
        if place not in ("cpu", "disk"):
            parse_device(place)


def dispatch(
    model: torch.nn.Module,
    device_map: DeviceMap | None,
    max_memory: Mapping[int | str, int | str] | None = None,
    offload_folder: str | None = None,
) -> torch.nn.Module:
    """``model``, built in memory, spread by accelerate over ``device_map`` as ``from_pretrained``
    spreads a checkpoint (``"auto"``-like strings are worked out under ``max_memory``); headmap's
    pruned models load this way. Without a device map the model is returned as it is."""
    if device_map is None:
        return model
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory, offload_state_dict

    placed: dict[str, Any]
    if isinstance(device_map, str):
        no_split = getattr(model, "_no_split_modules", None) or []
        memory = dict(max_memory) if max_memory is not None else None
        if device_map != "sequential":
            memory = get_balanced_memory(
                model,
                max_memory=memory,
                no_split_module_classes=no_split,
                low_zero=device_map == "balanced_low_0",
            )
        placed = infer_auto_device_map(model, max_memory=memory, no_split_module_classes=no_split)
    else:
        placed = dict(device_map)
    if "disk" in placed.values() and offload_folder is None:
        raise HeadmapError(
            "the device map puts modules on 'disk': give offload_folder, a folder for their weights"
        )
    disk = [name for name, place in placed.items() if place == "disk"]
    if disk:
        # Written here, always: accelerate skips writing when the folder holds an index already (a
        # stale one from another model), and writes nothing for a whole model on disk ({"": "disk"}).
        offload_state_dict(
            offload_folder,
            {
                key: tensor
                for key, tensor in model.state_dict().items()
                if any(not name or key == name or key.startswith(name + ".") for name in disk)
            },
        )
    dispatched: Any = dispatch_model(model, device_map=placed, offload_dir=offload_folder)
    dispatched.hf_device_map = placed  # as from_pretrained records it
    return dispatched


def input_device(model: torch.nn.Module) -> torch.device:
    """The device a model's inputs (ids, masks, positions) go to before a forward.

    The input embedding's device: where accelerate runs it when the model is spread by a device map
    (the embedding's hook says; its weights may sit on ``meta`` between forwards), else where its
    weights are. Models without an input embedding fall back on the device map's main device, then
    on the first parameter that is not ``meta``, then on the CPU.
    """
    embeddings = _input_embeddings(model)
    if embeddings is not None:
        execution = getattr(getattr(embeddings, "_hf_hook", None), "execution_device", None)
        if execution is not None:
            return torch.device(execution)
        weight = getattr(embeddings, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.device.type != "meta":
            return weight.device
    device_map = getattr(model, "hf_device_map", None)
    if isinstance(device_map, Mapping) and device_map:
        # accelerate runs modules placed on "cpu" or "disk" on its main device, the first other one.
        placed = [d for d in device_map.values() if d not in ("cpu", "disk")]
        return torch.device(placed[0]) if placed else torch.device("cpu")
    for parameter in model.parameters():
        if parameter.device.type != "meta":
            return parameter.device
    return torch.device("cpu")


def is_offloaded(model: torch.nn.Module) -> bool:
    """True when accelerate keeps some of the weights off the model (``meta`` until their module runs)."""
    return any(parameter.device.type == "meta" for parameter in model.parameters())


def _input_embeddings(model: torch.nn.Module) -> torch.nn.Module | None:
    getter = getattr(model, "get_input_embeddings", None)
    if getter is None:
        return None
    try:
        embeddings = getter()
    except (NotImplementedError, AttributeError):
        return None
    return embeddings if isinstance(embeddings, torch.nn.Module) else None


__all__ = [
    "DEVICE_MAPS",
    "DTYPES",
    "DeviceMap",
    "check_placement",
    "dispatch",
    "input_device",
    "is_offloaded",
    "parse_device",
    "parse_dtype",
]
