"""Remove heads from a model's computation: ``with headmap.ablate(model, [(3, 5)]): model(**inputs)``.

transformers 5 dropped ``head_mask`` and ``prune_heads``; headmap gates a head's slice of the
attention kernel output ``[batch, query, head, dim]`` before the output projection instead, so it
works under SDPA for every model whose kernel the capture taps (see :mod:`headmap.analysis.gating`).

Modes, for each ablated head ``h`` of a layer:

- ``"zero"``: its output is 0 at every position, so the output projection gets nothing from it
  (the projection's bias, where it has one, still applies: it belongs to no head);
- ``"mean"``: its output at every position is replaced by a constant vector. With ``reference``
  texts, that vector is the head's output averaged over every token of every reference text (each
  text run alone through the unablated model, each token counting once). Without them, it is the
  head's output averaged over the real (non-padding, per the ``attention_mask`` keyword given to
  the model) query positions of each text of the current forward, separately per text. For a
  decoder that mean includes later tokens, so every position sees a little of the future: use
  reference texts when that matters.

The ablation applies only to forwards run on the thread that entered the context, and nothing is
left patched after it exits, also when the body raises.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from headmap.analysis.gating import ForwardState, gate_heads, model_of, resolve_pairs
from headmap.capture.discovery import forward_module
from headmap.capture.encoding import encode, pad_token_id
from headmap.capture.tap import AttentionCall
from headmap.errors import HeadmapError
from headmap.models import LoadedModel
from headmap.models.devices import input_device
from headmap.result import LayerKey

MODES = ("zero", "mean")
HeadSpec = Sequence[tuple[int | str | LayerKey, int]]


@contextmanager
def ablate(
    model: LoadedModel | torch.nn.Module,
    heads: HeadSpec,
    mode: str = "zero",
    reference: Sequence[str] | None = None,
    tokenizer: object | None = None,
) -> Iterator[dict[LayerKey, list[int]]]:
    """Remove ``heads`` (``[(layer, head), ...]``) from ``model``'s forwards inside the ``with`` block.

    ``mode`` is ``"zero"`` or ``"mean"`` (see the module docstring); ``reference`` texts set the mean
    (they need the tokenizer: pass a :class:`~headmap.LoadedModel`, or ``tokenizer=``). Yields the
    ablated heads per layer. Raises :class:`HeadmapError` for unknown layers or heads, an unknown
    mode, or a model whose attention has no kernel output to gate (eager-weights path).
    """
    if mode not in MODES:
        raise HeadmapError(f"unknown ablation mode {mode!r}: use one of {', '.join(MODES)}")
    if reference is not None and mode != "mean":
        raise HeadmapError("reference texts only set the mean of mode='mean'; drop them for mode='zero'")
    chosen = resolve_pairs(model, heads)
    if not chosen:
        raise HeadmapError("no heads to ablate: pass (layer, head) pairs")
    index = {key: torch.tensor(h, dtype=torch.long) for key, h in chosen.items()}
    means = None
    if reference is not None:
        means = reference_means(model, chosen, reference, tokenizer)

    def advice(key: LayerKey, out: torch.Tensor, call: AttentionCall, forward: ForwardState) -> torch.Tensor:
        idx = index[key].to(out.device)
        if mode == "zero":
            replacement = out.new_zeros(out.shape[0], out.shape[1], len(idx), out.shape[3])
        elif means is not None:
            replacement = means[key].to(out)[None, None].expand(out.shape[0], out.shape[1], -1, -1)
        else:
            replacement = _input_mean(out[:, :, idx], forward.real_queries(key, out.shape[0], out.shape[1]))
        return out.index_copy(2, idx, replacement)

    with gate_heads(model, list(chosen), advice, what="ablation"):
        yield chosen


def _input_mean(picked: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
    """``picked`` ``[batch, query, head, dim]`` -> each text's mean over its real queries, at every query."""
    if real is None:
        mean = picked.mean(1, keepdim=True)
    else:
        weights = real.to(picked.device, picked.dtype)[:, :, None, None]
        mean = (picked * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp(min=1)
    return mean.expand_as(picked)


def reference_means(
    model: LoadedModel | torch.nn.Module,
    chosen: dict[LayerKey, list[int]],
    texts: Sequence[str],
    tokenizer: object | None = None,
) -> dict[LayerKey, torch.Tensor]:
    """``{layer: [head, dim]}``: each chosen head's output averaged over every token of ``texts``.

    Every text runs alone (no padding) through the unablated model; every token counts once.
    """
    module = model_of(model)
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tok is None:
        raise HeadmapError("reference texts need the tokenizer: pass a headmap.LoadedModel or tokenizer=")
    if isinstance(texts, str) or not texts:
        raise HeadmapError("reference must be a non-empty list of texts")
    sums: dict[LayerKey, torch.Tensor] = {}
    counts: dict[LayerKey, int] = {}
    index = {key: torch.tensor(h, dtype=torch.long) for key, h in chosen.items()}

    def observe(key: LayerKey, out: torch.Tensor, call: AttentionCall, forward: ForwardState) -> torch.Tensor:
        picked = out[0, :, index[key].to(out.device)].double()  # [query, head, dim]
        sums[key] = sums.get(key, 0) + picked.sum(0)
        counts[key] = counts.get(key, 0) + picked.shape[0]
        return out

    device = input_device(module)
    with gate_heads(module, list(chosen), observe, what="ablation"), torch.inference_mode():
        for text in texts:
            ids, _ = encode(tok, text)
            inputs = {"input_ids": torch.tensor([ids], device=device)}
            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
            if getattr(module.config, "is_encoder_decoder", False):
                start = getattr(module.config, "decoder_start_token_id", None)
                start = pad_token_id(tok) if start is None else start
                inputs["decoder_input_ids"] = torch.tensor([[start, *ids]], device=device)
            forward_module(module)(**inputs, use_cache=False)
    return {key: (sums[key] / counts[key]).float() for key in chosen}


__all__ = ["MODES", "ablate", "reference_means"]
