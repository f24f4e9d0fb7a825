"""Ablation equals an independent implementation (hooks on each output projection's input columns),
leaves nothing patched, and stays on the thread that asked for it."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from conftest import TROPHY
from hand_heads import PROJECTIONS, const_change, hand_gate, masked_mean_change, recorder, zero_change
from tiny_models import build

import headmap
from headmap.analysis.ablation import ablate
from headmap.errors import HeadmapError

TEXTS = ["The trophy didn't fit in the suitcase.", "It was too big, they said twice over, and more."]
REFERENCE = ["A short reference text.", "Another one, a little longer than the first."]
HEAD_DIM = 8  # every tiny model: hidden 32, 4 heads


def inputs_for(model: torch.nn.Module, tokenizer, texts) -> dict:  # type: ignore[no-untyped-def]
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if model.config.is_encoder_decoder:
        inputs["decoder_input_ids"], inputs["decoder_attention_mask"] = (
            enc["input_ids"],
            enc["attention_mask"],
        )
    return inputs


def outputs(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        out = model(**inputs)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def nothing_patched(model: torch.nn.Module) -> bool:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from headmap.capture import tap

    hooks = any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())
    return (
        not hooks
        and "get_interface" not in vars(ALL_ATTENTION_FUNCTIONS)
        and torch.nn.functional.scaled_dot_product_attention is tap._original_sdpa
    )


# Per model: which layers to ablate (encoder-decoder models: one of each stack; ALBERT: its shared module).
CASES = {
    "bert": ["layer.1"],
    "llama": ["layer.0", "layer.1"],
    "gpt2": ["layer.1"],
    "qwen2": ["layer.1"],
    "mistral": ["layer.0"],
    "gemma2": ["layer.1"],
    "gpt_neox": ["layer.0"],
    "falcon": ["layer.1"],
    "roberta": ["layer.0"],
    "albert": ["layer.1"],
    "t5": ["encoder.1", "decoder.0", "cross.1"],
    "bart": ["encoder.0", "decoder.1", "cross.0"],
}


@pytest.mark.parametrize("arch", sorted(CASES))
def test_zero_ablation_equals_projection_hooks(arch, bert_tokenizer):
    fast, _ = build(arch, bert_tokenizer)
    model = fast.model
    inputs = inputs_for(model, bert_tokenizer, TEXTS)
    layers = CASES[arch]
    heads = {layer: [0, 2] for layer in layers}
    base = outputs(model, inputs)
    with ablate(fast, [(layer, h) for layer in layers for h in heads[layer]]) as chosen:
        ours = outputs(model, inputs)
    assert sorted(k.name for k in chosen) == sorted(layers)
    paths = PROJECTIONS[arch](3 if arch == "albert" else 2)
    with hand_gate(model, paths, heads, HEAD_DIM, zero_change):
        hand = outputs(model, inputs)
    assert (ours - hand).abs().max().item() <= 1e-5
    assert (ours - base).abs().max().item() > 1e-2  # the heads mattered: the check is not vacuous
    assert nothing_patched(model)
    assert torch.equal(outputs(model, inputs), base)


def test_shared_module_ablates_only_its_own_layer(bert_tokenizer):
    fast, _ = build("albert", bert_tokenizer)
    inputs = inputs_for(fast.model, bert_tokenizer, TEXTS)
    paths = PROJECTIONS["albert"](3)
    for layer in ("layer.0", "layer.2"):
        with ablate(fast, [(layer, 1)]):
            ours = outputs(fast.model, inputs)
        with hand_gate(fast.model, paths, {layer: [1]}, HEAD_DIM, zero_change):
            hand = outputs(fast.model, inputs)
        assert (ours - hand).abs().max().item() <= 1e-5
        with ablate(fast, [(layer, 1)]):  # counts restart with every forward
            assert torch.equal(outputs(fast.model, inputs), ours)


@pytest.mark.parametrize("arch", ["llama", "bert"])
def test_mean_ablation_with_reference_texts(arch, bert_tokenizer):
    fast, _ = build(arch, bert_tokenizer)
    model = fast.model
    paths = PROJECTIONS[arch](2)
    heads = {"layer.1": [1, 3]}
    # The reference mean by hand: each head's projection input, every token of every reference text.
    seen: dict = {}
    with hand_gate(model, paths, heads, HEAD_DIM, recorder(seen)), torch.no_grad():
        for text in REFERENCE:  # each text alone: no padding
            model(**inputs_for(model, bert_tokenizer, [text]))
    means = {key: torch.cat(rows).mean(0) for key, rows in seen.items()}
    inputs = inputs_for(model, bert_tokenizer, TEXTS)
    with ablate(fast, [("layer.1", 1), ("layer.1", 3)], mode="mean", reference=REFERENCE):
        ours = outputs(model, inputs)
    with hand_gate(model, paths, heads, HEAD_DIM, const_change(means)):
        hand = outputs(model, inputs)
    assert (ours - hand).abs().max().item() <= 1e-5
    assert nothing_patched(model)


def test_mean_ablation_of_the_current_input_ignores_padding(bert_tokenizer):
    fast, _ = build("bert", bert_tokenizer)
    model = fast.model
    inputs = inputs_for(model, bert_tokenizer, TEXTS)  # padded: the texts differ in length
    assert not inputs["attention_mask"].all()
    with ablate(fast, [(0, 2)], mode="mean"):
        ours = outputs(model, inputs)
    with hand_gate(
        model,
        PROJECTIONS["bert"](2),
        {"layer.0": [2]},
        HEAD_DIM,
        masked_mean_change(inputs["attention_mask"]),
    ):
        hand = outputs(model, inputs)
    real = inputs["attention_mask"].bool()
    assert (ours - hand)[real].abs().max().item() <= 1e-5
    # Each text is ablated with its own mean: alone it gives what it gives in the batch.
    first = {k: v[:1, : int(real[0].sum())] for k, v in inputs.items()}
    with ablate(fast, [(0, 2)], mode="mean"):
        alone = outputs(model, first)
    assert (alone[0] - ours[0, : alone.shape[1]]).abs().max().item() <= 1e-5


def test_nothing_patched_after_an_exception_and_errors(bert_tokenizer):
    fast, _ = build("llama", bert_tokenizer)
    inputs = inputs_for(fast.model, bert_tokenizer, TEXTS)
    base = outputs(fast.model, inputs)
    with pytest.raises(RuntimeError, match="boom"), ablate(fast, [(1, 0)]):
        outputs(fast.model, inputs)
        raise RuntimeError("boom")
    assert nothing_patched(fast.model) and torch.equal(outputs(fast.model, inputs), base)
    with pytest.raises(HeadmapError, match="head 4 is out of range"), ablate(fast, [(1, 4)]):
        pass
    with pytest.raises(HeadmapError, match="layer 2 is out of range"), ablate(fast, [(2, 0)]):
        pass
    with pytest.raises(HeadmapError, match="unknown ablation mode"), ablate(fast, [(0, 0)], mode="drop"):
        pass
    with pytest.raises(HeadmapError, match=r"\(layer, head\) pairs"), ablate(fast, [3]):  # type: ignore[list-item]
        pass
    bloom, _ = build("bloom", bert_tokenizer)
    with (
        pytest.raises(
            HeadmapError, match=r"BloomForCausalLM \(bloom\) .* ablation needs a model whose attention"
        ),
        ablate(bloom, [(0, 0)]),
    ):
        pass
    assert nothing_patched(fast.model)


def test_ablation_stays_on_its_thread(bert_tokenizer):
    fast, _ = build("llama", bert_tokenizer)
    inputs = inputs_for(fast.model, bert_tokenizer, TEXTS)
    base = outputs(fast.model, inputs)
    other: list[torch.Tensor] = []
    inside, release = threading.Event(), threading.Event()

    def worker() -> None:
        inside.wait()
        other.append(outputs(fast.model, inputs))  # runs while the main thread is inside ablate
        release.set()

    thread = threading.Thread(target=worker)
    thread.start()
    with ablate(fast, [(0, 0), (1, 3)]):
        inside.set()
        release.wait(30)
        ablated = outputs(fast.model, inputs)
    thread.join()
    assert torch.equal(other[0], base)
    assert (ablated - base).abs().max().item() > 1e-2


@pytest.mark.slow
def test_smollm2_ablation_equals_projection_hooks(smollm2):
    model = smollm2.model
    enc = smollm2.tokenizer([TROPHY], return_tensors="pt")
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    heads = {"layer.3": [0, 7], "layer.12": [4]}
    paths = {f"layer.{i}": f"model.layers.{i}.self_attn.o_proj" for i in range(30)}
    base = outputs(model, inputs)
    with headmap.ablate(smollm2, [(3, 0), (3, 7), (12, 4)]):
        ours = outputs(model, inputs)
    with hand_gate(model, paths, heads, 64, zero_change):
        hand = outputs(model, inputs)
    assert (ours - hand).abs().max().item() <= 1e-5
    assert (ours - base).abs().max().item() > 1e-2
    assert nothing_patched(model)
    assert np.isfinite(ours.numpy()).all()
