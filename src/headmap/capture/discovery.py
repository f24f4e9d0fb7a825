"""Find a model's attention layers, and how to tap them, by watching tiny probe forward passes.

Rather than keeping a table of module names per architecture (the fault of tools that need a hand
config for each new model), headmap runs the model once on a few tokens with every interception
point open. The calls arrive in depth order; for encoder-decoder models the encoder and decoder get
different lengths, so the shape of each call tells encoder self-attention, decoder self-attention
and cross-attention apart. A module that is called several times in one forward (ALBERT shares one
layer across depth) is one layer per call.

Each layer gets one of three paths, tried in this order:

- ``DISPATCH``: the module calls its kernel through transformers' attention interface (most models);
- ``TORCH_SDPA``: the module calls torch's SDPA itself (Falcon, ...);
- ``EAGER_WEIGHTS``: the module computes its weights itself and returns them (Bloom's ALiBi,
  DeBERTa's disentangled attention, MPT): headmap takes the model's own weights from the module's
  output, one layer at a time.

A further probe finds where the model counts positions from when it is given none (0 for most,
``padding_idx + 1`` for RoBERTa-style models), so padded batches can give every text the positions
it gets alone.
"""

from __future__ import annotations

import inspect
import threading
import weakref
from dataclasses import dataclass, field

import torch

from headmap.capture.tap import AttentionCall, CapturePath, module_scope, tap
from headmap.errors import HeadmapError
from headmap.models.devices import input_device
from headmap.result import LayerKey, Stack

_ENCODER_PROBE, _DECODER_PROBE = 5, 3


@dataclass(frozen=True)
class Site:
    """Where one attention layer is computed: a module, and which of its calls in a forward."""

    module: torch.nn.Module
    occurrence: int = 0
    path: CapturePath = CapturePath.DISPATCH
    weights_index: int | None = None  # EAGER_WEIGHTS: position of the weights in the module's output


@dataclass(frozen=True)
class Architecture:
    """The attention layers of a model and what a forward pass needs."""

    sites: dict[LayerKey, Site]
    num_heads: int  # query heads per layer; the most of any layer where layers differ
    is_encoder_decoder: bool
    accepts_position_ids: bool
    position_offset: int | None  # default positions are offset + 0, 1, ...; None when unknown
    layer_heads: dict[LayerKey, int] = field(default_factory=dict)
    """Query heads of each layer, where they differ from layer to layer (a pruned model); else empty."""
    vision: VisionLayout | None = None
    """How an image model lays out its units (None for models that take text)."""
    audio_frames: int | None = None
    """Encoder frames of a speech model that takes mel features (Whisper); None for other models."""

    def heads_in(self, key: LayerKey) -> int:
        """How many query heads layer ``key`` has."""
        return self.layer_heads.get(key, self.num_heads)

    @property
    def modules(self) -> dict[LayerKey, torch.nn.Module]:
        return {key: site.module for key, site in self.sites.items()}

    @property
    def num_layers(self) -> dict[Stack, int]:
        counts: dict[Stack, int] = {}
        for key in self.sites:
            counts[key.stack] = counts.get(key.stack, 0) + 1
        return counts

    @property
    def paths(self) -> set[CapturePath]:
        return {site.path for site in self.sites.values()}

    @property
    def needs_output_attentions(self) -> bool:
        """Eager-weights modules (DeBERTa) return their weights only when the model is asked for them."""
        return CapturePath.EAGER_WEIGHTS in self.paths


@dataclass(frozen=True)
class VisionLayout:
    """What an image model's sequence is made of: ``prefix`` tokens (CLS, registers), then one unit per
    ``patch`` x ``patch`` square of the image, row by row; ``channels`` and ``size`` are its config's."""

    prefix: int
    patch: tuple[int, int]
    channels: int
    size: tuple[int, int]


def takes_pixels(runner: torch.nn.Module) -> bool:
    """Whether a model's forward takes an image (``pixel_values``) rather than token ids."""
    params = inspect.signature(runner.forward).parameters
    return "pixel_values" in params and "input_ids" not in params


def takes_audio(runner: torch.nn.Module) -> bool:
    """Whether a model's forward takes log-mel ``input_features`` (Whisper) rather than token ids."""
    params = inspect.signature(runner.forward).parameters
    return "input_features" in params and "input_ids" not in params


def _audio_probe(config: object, device: torch.device) -> Inputs:
    """Random mel features of the full length the encoder takes (2 mel frames per encoder frame)."""
    frames = 2 * int(getattr(config, "max_source_positions", 1500))
    mels = int(getattr(config, "num_mel_bins", 80))
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(1, mels, frames, generator=generator).to(device)
    return {"input_features": features, "decoder_input_ids": torch.ones(1, _DECODER_PROBE, dtype=torch.long)}


def _pair(value: object, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return int(value[0]), int(value[1])
    raise HeadmapError(
        f"the model's config has no usable {name} ({value!r}): headmap cannot lay out its patches"
    )


def _vision_config(config: object) -> object:
    """The image tower's config (a composite config such as CLIP's keeps it under ``vision_config``)."""
    return getattr(config, "vision_config", None) or config


_cache: weakref.WeakKeyDictionary[torch.nn.Module, Architecture] = weakref.WeakKeyDictionary()
_discovery_lock = threading.Lock()


def forward_module(model: torch.nn.Module) -> torch.nn.Module:
    """The model without its LM head where that is possible: logits of a long input would cost
    ``tokens x vocabulary`` floats (1.6 GB at 8k tokens for SmolLM2) and are never needed here."""
    base = getattr(model, "base_model", model)
    return base if isinstance(base, torch.nn.Module) else model


def discover(model: torch.nn.Module) -> Architecture:
    """The :class:`Architecture` of ``model`` (cached per model object; safe from several threads)."""
    with _discovery_lock:
        if model not in _cache:
            _cache[model] = _in_eval_mode(model)
        return _cache[model]


def _in_eval_mode(model: torch.nn.Module) -> Architecture:
    """:func:`_discover` with every module in eval mode, each module's own mode restored after: a model
    met first while training (the monitor's) would otherwise be probed with dropout on, fail the
    position probe and be cached as one that takes no position ids."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        return _discover(model)
    finally:
        for module, training in modes:
            module.training = training


#: Keyword inputs of a probe forward.
Inputs = dict[str, torch.Tensor]
#: One attention call of a probe: ``(module, query length, key length, path, weights index)``.
_Entry = tuple[torch.nn.Module, int, int, CapturePath, int | None]


def _queries(call: AttentionCall) -> torch.Tensor:
    """The queries of a kernel call (kernel calls have them; only eager-weights calls do not)."""
    assert call.query is not None
    return call.query


def _keys(call: AttentionCall) -> torch.Tensor:
    assert call.key is not None
    return call.key


def _image_probe(config: object, device: torch.device) -> Inputs:
    """A random image of the model's configured size: the probe of models that take pixels."""
    vision = _vision_config(config)
    height, width = _pair(getattr(vision, "image_size", None), "image_size")
    channels = int(getattr(vision, "num_channels", 3))
    generator = torch.Generator().manual_seed(0)
    return {"pixel_values": torch.randn(1, channels, height, width, generator=generator).to(device)}


def _probe_inputs(config: object, is_enc_dec: bool, device: torch.device) -> Inputs:
    vocab = int(getattr(config, "vocab_size", 8) or 8)
    # Ordinary tokens from the middle of the vocabulary: a special id (RoBERTa's pad is 1) would
    # change what the model does with the probe.
    specials = {getattr(config, a, None) for a in ("pad_token_id", "bos_token_id", "eos_token_id")}
    candidates = [i for i in range(vocab // 2, vocab // 2 + 16) if i not in specials] or list(range(vocab))
    ids = torch.tensor(candidates[:_ENCODER_PROBE], device=device)[None]
    inputs: dict[str, torch.Tensor] = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if is_enc_dec:
        inputs["decoder_input_ids"] = ids[:, :_DECODER_PROBE]
    return inputs


def _probe_failed(model: torch.nn.Module, exc: Exception) -> HeadmapError:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return HeadmapError(
        f"{type(model).__name__} could not run a probe forward pass ({type(exc).__name__}: {first}); "
        "headmap supports transformers models that take input_ids"
    )


def _kernel_calls(runner: torch.nn.Module, inputs: Inputs) -> list[AttentionCall]:
    """Attention kernel calls of one probe forward, at the dispatch point or at torch SDPA."""
    calls: list[AttentionCall] = []
    modules = [m for m in runner.modules() if m is not runner]
    with torch.inference_mode(), module_scope(modules), tap(calls.append):
        runner(**inputs, use_cache=False)
    return calls


def _returned_weights(
    runner: torch.nn.Module, inputs: Inputs
) -> list[tuple[torch.nn.Module, int, torch.Tensor]]:
    """For models that compute weights themselves: ``(module, index in its output, weights)`` per
    layer in depth order, found as the innermost module that returns each of the tensors the model
    hands back under ``output_attentions=True``."""
    seen: list[tuple[torch.nn.Module, int, torch.Tensor]] = []
    owner = threading.get_ident()

    def record(module: torch.nn.Module, args: object, output: object) -> None:
        if threading.get_ident() == owner and isinstance(output, tuple):
            seen.extend(
                (module, i, t) for i, t in enumerate(output) if isinstance(t, torch.Tensor) and t.ndim == 4
            )

    handles = [m.register_forward_hook(record) for m in runner.modules() if m is not runner]
    try:
        with torch.inference_mode():
            outputs = runner(**inputs, use_cache=False, output_attentions=True)
    finally:
        for handle in handles:
            handle.remove()
    wanted = _attention_tensors(outputs)
    layers: list[tuple[torch.nn.Module, int, torch.Tensor]] = []
    for module, index, tensor in seen:  # forward hooks fire innermost first
        if any(tensor is w for w in wanted) and not any(tensor is t for _, _, t in layers):
            layers.append((module, index, tensor))
    return layers


def _attention_tensors(outputs: object) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    for name in ("attentions", "encoder_attentions", "decoder_attentions", "cross_attentions"):
        for item in getattr(outputs, name, None) or ():
            if isinstance(item, torch.Tensor):
                found.append(item)
    return found


def _classify(q_len: int, k_len: int, is_enc_dec: bool, source: int = _ENCODER_PROBE) -> Stack:
    if not is_enc_dec:
        return Stack.SELF
    if q_len == source and k_len == source:
        return Stack.ENCODER
    if q_len == _DECODER_PROBE and k_len == _DECODER_PROBE:
        return Stack.DECODER
    return Stack.CROSS


def _layer_sites(entries: list[_Entry], is_enc_dec: bool, source: int) -> dict[LayerKey, Site]:
    """``(module, q_len, k_len, path, weights_index)`` per call in depth order -> sites by layer."""
    sites: dict[LayerKey, Site] = {}
    counts: dict[Stack, int] = {}
    occurrences: dict[int, int] = {}
    for module, q_len, k_len, path, index in entries:
        stack = _classify(q_len, k_len, is_enc_dec, source)
        key = LayerKey(stack, counts.get(stack, 0))
        counts[stack] = key.index + 1
        occurrence = occurrences.get(id(module), 0)
        occurrences[id(module)] = occurrence + 1
        sites[key] = Site(module, occurrence, path, index)
    return sites


def _discover(model: torch.nn.Module) -> Architecture:
    config = getattr(model, "config", None)
    if config is None:
        raise HeadmapError(
            f"{type(model).__name__} is not a Hugging Face transformers model (it has no config)"
        )
    is_enc_dec = bool(getattr(config, "is_encoder_decoder", False))
    runner = forward_module(model)
    pixels = takes_pixels(runner)
    device = input_device(model)
    audio = takes_audio(runner)
    inputs = _image_probe(config, device) if pixels else _probe_inputs(config, is_enc_dec, device)
    inputs = _audio_probe(config, device) if audio else inputs
    try:
        calls = _kernel_calls(runner, inputs)
        entries: list[_Entry]
        if calls:
            entries = [(c.module, _queries(c).shape[2], _keys(c).shape[2], c.via, None) for c in calls]
            heads = [_queries(c).shape[1] for c in calls]
        else:
            returned = _returned_weights(runner, inputs)
            entries = [(m, w.shape[2], w.shape[3], CapturePath.EAGER_WEIGHTS, i) for m, i, w in returned]
            heads = [w.shape[1] for _, _, w in returned]
    except HeadmapError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure here means the model cannot be probed
        raise _probe_failed(model, exc) from exc
    if not entries:
        raise HeadmapError(
            f"{type(model).__name__} ({getattr(config, 'model_type', '?')}) neither calls an attention kernel "
            "that headmap can tap nor returns attention weights, so its attention cannot be captured "
            "(state-space and other attention-free models have none to show)"
        )
    accepts_positions = "position_ids" in inspect.signature(runner.forward).parameters and not is_enc_dec
    source = inputs["input_features"].shape[-1] // 2 if audio else _ENCODER_PROBE
    sites = _layer_sites(entries, is_enc_dec, source)
    offset = _position_offset(runner, config, inputs, sites) if accepts_positions else None
    # Sites are in call order, as the head counts are.
    per_layer = {key: int(n) for key, n in zip(sites, heads)}
    return Architecture(
        sites=sites,
        num_heads=max(per_layer.values()),
        is_encoder_decoder=is_enc_dec,
        accepts_position_ids=accepts_positions,
        position_offset=offset,
        layer_heads=per_layer if len(set(per_layer.values())) > 1 else {},
        vision=_layout(config, inputs, entries[0][2]) if pixels else None,
        audio_frames=source if audio else None,
    )


def _layout(config: object, inputs: Inputs, length: int) -> VisionLayout:
    """The probe image's sequence ``length`` less its patches is the number of prefix tokens."""
    vision = _vision_config(config)
    patch = _pair(getattr(vision, "patch_size", None), "patch_size")
    channels, height, width = inputs["pixel_values"].shape[1:]
    prefix = length - (height // patch[0]) * (width // patch[1])
    if prefix < 0:
        raise HeadmapError(
            f"{type(config).__name__}: {length} units for a {height}x{width} image in {patch} patches; "
            "headmap cannot lay out this model's patches"
        )
    return VisionLayout(prefix=prefix, patch=patch, channels=int(channels), size=(int(height), int(width)))


def _first_layer_state(runner: torch.nn.Module, inputs: Inputs, site: Site) -> list[torch.Tensor]:
    """What the first layer's attention sees: its queries and keys, or its weights."""
    if site.path is CapturePath.EAGER_WEIGHTS:
        layers = _returned_weights(runner, inputs)
        return [layers[0][2].clone()] if layers else []
    calls = _kernel_calls(runner, inputs)
    return [_queries(calls[0]).clone(), _keys(calls[0]).clone()] if calls else []


def _position_offset(
    runner: torch.nn.Module, config: object, inputs: Inputs, sites: dict[LayerKey, Site]
) -> int | None:
    """Where the model starts counting positions when given none, or None if neither guess fits."""
    first = sites[min(sites, key=lambda k: k.sort_key)]
    reference = _first_layer_state(runner, inputs, first)
    length = inputs["input_ids"].shape[1]
    pad = getattr(config, "pad_token_id", None)
    for offset in dict.fromkeys([0, *([pad + 1] if isinstance(pad, int) else [])]):
        positions = offset + torch.arange(length, device=inputs["input_ids"].device)
        given = dict(inputs, position_ids=positions[None])
        try:
            state = _first_layer_state(runner, given, first)
        except Exception:  # noqa: BLE001 - a model that rejects the ids has no usable offset
            return None
        if len(state) == len(reference) and all(torch.equal(a, b) for a, b in zip(state, reference)):
            return offset
    return None
