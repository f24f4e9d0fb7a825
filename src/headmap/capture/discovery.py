"""Find a model's attention modules by watching one tiny forward pass.

Rather than keeping a table of module names per architecture (the fault of tools that need a hand
config for each new model), headmap runs the model once on a few tokens with a tap on every
attention kernel call. The calls arrive in depth order; for encoder-decoder models the encoder
and decoder get different lengths, so the shape of each call tells encoder self-attention,
decoder self-attention and cross-attention apart.
"""

from __future__ import annotations

import inspect
import weakref
from dataclasses import dataclass

import torch

from headmap.errors import HeadmapError
from headmap.result import LayerKey, Stack
from headmap.capture.tap import AttentionCall, tap

_ENCODER_PROBE, _DECODER_PROBE = 5, 3


@dataclass(frozen=True)
class Architecture:
    """The attention modules of a model, by layer, and what a forward pass needs."""

    modules: dict[LayerKey, torch.nn.Module]
    num_heads: int
    is_encoder_decoder: bool
    accepts_position_ids: bool

    @property
    def num_layers(self) -> dict[Stack, int]:
        counts: dict[Stack, int] = {}
        for key in self.modules:
            counts[key.stack] = counts.get(key.stack, 0) + 1
        return counts


_cache: weakref.WeakKeyDictionary[torch.nn.Module, Architecture] = weakref.WeakKeyDictionary()


def forward_module(model: torch.nn.Module) -> torch.nn.Module:
    """The model without its LM head where that is possible: logits of a long input would cost
    ``tokens x vocabulary`` floats (1.6 GB at 8k tokens for SmolLM2) and are never needed here."""
    base = getattr(model, "base_model", model)
    return base if isinstance(base, torch.nn.Module) else model


def discover(model: torch.nn.Module) -> Architecture:
    """The :class:`Architecture` of ``model`` (cached per model object)."""
    if model in _cache:
        return _cache[model]
    config = getattr(model, "config", None)
    if config is None:
        raise HeadmapError(f"{type(model).__name__} is not a Hugging Face transformers model (it has no config)")
    is_enc_dec = bool(getattr(config, "is_encoder_decoder", False))
    runner = forward_module(model)
    calls: list[AttentionCall] = []
    vocab = int(getattr(config, "vocab_size", 8) or 8)
    ids = torch.arange(1, 1 + _ENCODER_PROBE).clamp(max=vocab - 1)[None]
    inputs: dict[str, torch.Tensor] = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if is_enc_dec:
        inputs["decoder_input_ids"] = ids[:, :_DECODER_PROBE]
    try:
        with torch.inference_mode(), tap(calls.append):
            runner(**inputs, use_cache=False)
    except HeadmapError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure here means the model cannot be probed
        raise HeadmapError(
            f"{type(model).__name__} could not run a probe forward pass ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); headmap supports transformers models that take input_ids"
        ) from exc
    if not calls:
        raise HeadmapError(
            f"{type(model).__name__} ({getattr(config, 'model_type', '?')}) computes attention without "
            "transformers' attention interface, so headmap cannot tap it. Supported: architectures whose "
            "attention modules dispatch through ALL_ATTENTION_FUNCTIONS (BERT, RoBERTa, GPT-2, GPT-NeoX, "
            "Llama, Qwen2/3, Mistral, Gemma 1-3, Phi, OPT, T5, BART, Whisper, ...)"
        )
    modules: dict[LayerKey, torch.nn.Module] = {}
    counts: dict[Stack, int] = {}
    for call in calls:
        stack = _classify(call, is_enc_dec)
        key = LayerKey(stack, counts.get(stack, 0))
        counts[stack] = key.index + 1
        modules[key] = call.module
    signature = inspect.signature(runner.forward).parameters
    arch = Architecture(
        modules=modules,
        num_heads=calls[0].query.shape[1],
        is_encoder_decoder=is_enc_dec,
        accepts_position_ids="position_ids" in signature and not is_enc_dec,
    )
    _cache[model] = arch
    return arch


def _classify(call: AttentionCall, is_enc_dec: bool) -> Stack:
    if not is_enc_dec:
        return Stack.SELF
    q_len, k_len = call.query.shape[2], call.key.shape[2]
    if q_len == _ENCODER_PROBE and k_len == _ENCODER_PROBE:
        return Stack.ENCODER
    if q_len == _DECODER_PROBE and k_len == _DECODER_PROBE:
        return Stack.DECODER
    return Stack.CROSS
