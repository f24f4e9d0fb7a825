"""Physical head removal: cut the pruned heads' weights out of a copy of the model, and check it.

The cut model must compute exactly what the gated one (``headmap.ablate(model, heads, mode="zero")``)
computes: a gated head adds nothing to the output projection, and a cut head is not there. Under
grouped-query attention a key/value head goes only when every query head reading it goes; a query
head whose key/value head stays loses its query rows and output-projection columns only. See
:mod:`headmap.models.pruned` for the layout and how groups of unequal size are kept exact.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from headmap.analysis.ablation import ablate
from headmap.analysis.gating import resolve_pairs
from headmap.capture.discovery import discover
from headmap.capture.encoding import encode, pad_batch, pad_token_id
from headmap.errors import HeadmapError
from headmap.models import LoadedModel
from headmap.models.devices import input_device, is_offloaded
from headmap.models.pruned import HeadLayout, attention_modules, current_layouts, cut_heads, original_layout
from headmap.result import LayerKey, Stack

LATENCY_BATCH = 64


def layer_keys(model: torch.nn.Module) -> list[LayerKey]:
    """The attention layers of ``model`` in depth order, checked to be its family's layers in order."""
    arch = discover(model)
    keys = sorted(arch.sites, key=lambda k: k.sort_key)
    modules = attention_modules(model)
    if [k.stack for k in keys] != [Stack.SELF] * len(modules) or any(
        arch.sites[k].module is not m for k, m in zip(keys, modules)
    ):
        raise HeadmapError(
            f"{type(model).__name__}: its attention calls do not follow its layers one to one, "
            "so headmap cannot tell which weights belong to which layer"
        )
    return keys


def plan_layout(current: HeadLayout, removed: Sequence[int], rep: int) -> HeadLayout:
    """The layout after removing query heads at positions ``removed`` of ``current``.

    ``rep``: query heads per key/value head in the original model (1 without GQA). A key/value head
    stays while one of its query heads does; when the groups left differ in size, each is split into
    slots of ``gcd(sizes)`` query heads.
    """
    gone = set(removed)
    query = tuple(h for p, h in enumerate(current.query) if p not in gone)
    if not query:
        raise HeadmapError("a layer would keep no head: keep at least one head per layer")
    if rep == 1 and current.kv == current.query:
        return HeadLayout(query, query)
    sizes = {g: sum(1 for h in query if h // rep == g) for g in current.kv}
    kv = tuple(g for g in current.kv if sizes[g])
    counts = [sizes[g] for g in kv]
    if len(set(counts)) == 1:
        return HeadLayout(query, kv)
    width = math.gcd(*counts)
    return HeadLayout(query, kv, tuple(i for i, g in enumerate(kv) for _ in range(sizes[g] // width)))


def layouts_for(model: torch.nn.Module, heads: Mapping[LayerKey, Sequence[int]]) -> list[HeadLayout]:
    """Each layer's layout once ``heads`` (``{layer: [head, ...]}``, current head numbers) are removed."""
    full = original_layout(model)
    rep = len(full.query) // len(full.kv)
    keys = layer_keys(model)
    unknown = set(heads) - set(keys)
    if unknown:
        raise HeadmapError(
            f"no layer {sorted(k.name for k in unknown)[0]} in this model: it has layer.0..layer.{len(keys) - 1}"
        )
    layouts = []
    for key, current in zip(keys, current_layouts(model)):
        removed = sorted(set(int(h) for h in heads.get(key, ())))
        if removed and not 0 <= removed[0] <= removed[-1] < len(current.query):
            raise HeadmapError(
                f"{key.name} has heads 0..{len(current.query) - 1}: cannot remove head {removed[-1]}"
            )
        if len(removed) == len(current.query):
            raise HeadmapError(
                f"removing every head of {key.name} leaves it without attention: keep at least one "
                "head per layer"
            )
        layouts.append(plan_layout(current, removed, rep))
    return layouts


def prune_heads(
    model: LoadedModel, heads: Mapping[LayerKey, Sequence[int]] | Sequence[tuple[int | str, int]]
) -> LoadedModel:
    """A copy of ``model`` with ``heads`` cut out of its attention projections; ``model`` is untouched.

    ``heads``: ``{LayerKey: [head, ...]}`` or ``[(layer, head), ...]`` as :func:`headmap.ablate` takes.
    Its outputs equal ``model``'s under ``headmap.ablate(model, heads, mode="zero")``.
    """

    if is_offloaded(model.model):
        raise HeadmapError(
            f"{model.name} keeps weights offloaded by its device_map (on 'meta' until their module runs), "
            "and physical pruning cuts weights in memory: load it onto devices that hold it whole "
            "(device=, or a device_map without 'cpu' or 'disk'), or gate the heads with headmap.ablate"
        )
    chosen = heads if isinstance(heads, Mapping) else resolve_pairs(model, list(heads))
    layouts = layouts_for(model.model, chosen)
    pruned = copy.deepcopy(model.model)
    cut_heads(pruned, layouts)
    pruned.eval()
    return LoadedModel(model=pruned, tokenizer=model.tokenizer, name=f"{model.name} (pruned)")


def parameter_count(model: torch.nn.Module) -> int:
    """Parameters of ``model``, a tied weight counted once."""
    return sum(p.numel() for p in model.parameters())


def _inputs(loaded: LoadedModel, texts: Sequence[str]) -> dict[str, torch.Tensor]:

    ids, mask, _ = pad_batch(
        [encode(loaded.tokenizer, t)[0] for t in texts], pad_token_id(loaded.tokenizer), "right"
    )
    device = input_device(loaded.model)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def _output(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits where the model has an LM head, else the last hidden state; padded positions zeroed."""
    out = model(**inputs)
    values = out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state
    return values * inputs["attention_mask"][..., None]


def max_difference(
    original: LoadedModel,
    pruned: LoadedModel,
    heads: Mapping[LayerKey, Sequence[int]],
    texts: Sequence[str],
    batch_size: int = 16,
) -> tuple[float, float]:
    """``(largest |pruned - gated|, largest |gated|)`` over the outputs (logits, else last hidden
    state) of ``texts``, ``gated`` being ``original`` with ``heads`` gated off."""
    difference = scale = 0.0
    pairs = [(k, h) for k, hs in heads.items() for h in hs]
    for first in range(0, len(texts), batch_size):  # logits of a whole corpus at once would not fit
        inputs = _inputs(original, texts[first : first + batch_size])
        with torch.inference_mode():
            with ablate(original, pairs, mode="zero"):
                gated = _output(original.model, inputs)
            cut = _output(pruned.model, inputs)
        difference = max(difference, float((gated - cut).abs().max()))
        scale = max(scale, float(gated.abs().max()))
    return difference, scale


@dataclass(frozen=True)
class Latency:
    """Seconds per forward of the same inputs, both models timed alternately in one run."""

    before: tuple[float, ...]
    after: tuple[float, ...]
    batch: int
    tokens: int  # padded tokens per text

    @property
    def median_before(self) -> float:
        return statistics.median(self.before)

    @property
    def median_after(self) -> float:
        return statistics.median(self.after)

    @property
    def speedup(self) -> float:
        return self.median_before / self.median_after


def measure_latency(
    original: LoadedModel,
    pruned: LoadedModel,
    texts: Sequence[str],
    repeats: int = 5,
    max_batch: int = LATENCY_BATCH,
) -> Latency:
    """Median of ``repeats`` forwards of the first ``max_batch`` of ``texts`` (one padded batch) per
    model, after one warm-up each. The two models alternate, so a load change on the machine hits both alike.
    """
    if repeats < 1:
        raise HeadmapError("latency needs at least one repeat")
    inputs = _inputs(original, texts[:max_batch])
    before: list[float] = []
    after: list[float] = []
    with torch.inference_mode():
        for model in (original.model, pruned.model):
            model(**inputs)
        for _ in range(repeats):
            for model, times in ((original.model, before), (pruned.model, after)):
                _sync(inputs["input_ids"].device)
                start = time.perf_counter()
                model(**inputs)
                _sync(inputs["input_ids"].device)
                times.append(time.perf_counter() - start)
    return Latency(
        tuple(before), tuple(after), int(inputs["input_ids"].shape[0]), int(inputs["input_ids"].shape[1])
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


__all__ = [
    "Latency",
    "layer_keys",
    "layouts_for",
    "max_difference",
    "measure_latency",
    "parameter_count",
    "plan_layout",
    "prune_heads",
]
