"""Models spread by accelerate over the CPU and the disk (``headmap.load(..., device_map=...)``) give
the same maps, statistics, ablations and importances as the model held whole: <= 1e-5 in float32.

Between forwards an offloaded module holds ``meta`` tensors and accelerate's hooks load its weights
as it runs; everything here runs on a CPU, so the test needs no GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TROPHY
from tiny_models import build

import headmap
from headmap.analysis.row_sums import STATS
from headmap.apps.prune import prune_heads
from headmap.apps.prune.save import save_pruned
from headmap.errors import HeadmapError
from headmap.models import input_device
from headmap.result import LayerKey, Stack

TOL = 1e-5
TEXTS = [TROPHY, "Attention is correlation, not causation."]
#: Per model: a device map with the input embedding on disk (its weights are ``meta`` until it runs),
#: one layer in memory and one on disk.
MAPS = {
    "llama": {
        "model.embed_tokens": "disk",
        "model.layers.0": "cpu",
        "model.layers.1": "disk",
        "model.norm": "cpu",
        "model.rotary_emb": "cpu",
        "lm_head": "disk",
    },
    "bert": {
        "embeddings": "disk",
        "encoder.layer.0": "disk",
        "encoder.layer.1": "cpu",
        "pooler": "cpu",
    },
}
ABLATED = [(0, 1), (1, 2), (1, 3)]


@pytest.fixture(scope="module", params=sorted(MAPS))
def models(request, bert_tokenizer, tmp_path_factory):
    """``(name, whole, offloaded, eager)``: one checkpoint loaded whole and spread over CPU and disk."""
    name = request.param
    fast, eager = build(name, bert_tokenizer)
    folder = tmp_path_factory.mktemp(f"tiny-{name}")
    fast.model.save_pretrained(folder)
    bert_tokenizer.save_pretrained(folder)
    whole = headmap.load(str(folder))
    offloaded = headmap.load(str(folder), device_map=MAPS[name], offload_folder=folder / "offload")
    return name, whole, offloaded, eager


def _max_difference(a, b) -> float:
    return max(float(np.abs(x.weights - y.weights).max()) for x, y in zip(a.layers, b.layers, strict=True))


def _outputs(loaded, texts) -> torch.Tensor:
    enc = loaded.tokenizer(texts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        out = loaded.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    values = out.logits if hasattr(out, "logits") else out.last_hidden_state
    return values.float() * enc["attention_mask"][..., None]


def test_the_map_really_offloads(models):
    name, whole, offloaded, _ = models
    devices = {p.device.type for p in offloaded.model.parameters()}
    assert devices == {"cpu", "meta"}, devices
    assert "disk" in offloaded.model.hf_device_map.values()
    # The embedding sits on disk: its weight says meta, but inputs go where it runs.
    assert offloaded.model.get_input_embeddings().weight.device.type == "meta"
    assert input_device(offloaded.model) == torch.device("cpu")
    assert input_device(whole.model) == torch.device("cpu")


def test_capture_equals_the_whole_model_and_eager_attention(models, bert_tokenizer):
    _, whole, offloaded, eager = models
    results = headmap.capture(offloaded, TEXTS)
    for text, got, expected in zip(TEXTS, results, headmap.capture(whole, TEXTS), strict=True):
        assert _max_difference(got, expected) <= TOL
        enc = bert_tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            reference = eager(**enc, output_attentions=True).attentions
        for layer in got.layers:
            assert isinstance(layer.weights, np.ndarray)
            assert np.abs(layer.weights - reference[layer.key.index][0].numpy()).max() <= TOL


def test_statistics_equal_the_whole_model(models):
    _, whole, offloaded, _ = models
    for fused in (True, False):
        got = headmap.collect_stats(offloaded, TROPHY, fused=fused, overview_size=8)
        expected = headmap.collect_stats(whole, TROPHY, fused=fused, overview_size=8)
        for stat in STATS:
            np.testing.assert_allclose(got.stat(stat), expected.stat(stat), rtol=0, atol=TOL, equal_nan=True)
        np.testing.assert_allclose(got.overview, expected.overview, rtol=0, atol=TOL)


@pytest.mark.parametrize("mode,reference", [("zero", None), ("mean", None), ("mean", ["A reference text."])])
def test_ablation_equals_the_whole_model(models, mode, reference):
    _, whole, offloaded, _ = models
    with headmap.ablate(whole, ABLATED, mode=mode, reference=reference):
        expected = _outputs(whole, TEXTS)
    with headmap.ablate(offloaded, ABLATED, mode=mode, reference=reference):
        got = _outputs(offloaded, TEXTS)
    assert (expected - _outputs(whole, TEXTS)).abs().max() > 1e-3  # the ablation changes something
    assert float((got - expected).abs().max()) <= TOL


def test_importance_equals_the_whole_model(models):
    name, whole, offloaded, _ = models
    loss = (
        "causal" if name == "llama" else (lambda output, inputs: output.last_hidden_state.pow(2).mean((1, 2)))
    )
    got = headmap.head_importance(offloaded, TEXTS, loss=loss)
    expected = headmap.head_importance(whole, TEXTS, loss=loss)
    assert np.abs(expected.raw).max() > 0
    np.testing.assert_allclose(got.raw, expected.raw, rtol=1e-4, atol=TOL)


def test_auto_map_under_a_memory_cap_and_a_pruned_model(bert_tokenizer, tmp_path):
    fast, _ = build("llama", bert_tokenizer)
    layer = LayerKey(Stack.SELF, 0)
    folder = save_pruned(prune_heads(fast, {layer: [0, 1]}), tmp_path / "cut", {})
    whole = headmap.load(str(folder))
    # 1 MB of memory holds none of its ~8 MB: everything goes to disk, and still runs.
    auto = headmap.load(
        str(folder), device_map="auto", max_memory={"cpu": "1MB"}, offload_folder=tmp_path / "off"
    )
    spread = headmap.load(str(folder), device_map=MAPS["llama"], offload_folder=tmp_path / "off2")
    for loaded in (auto, spread):
        assert "disk" in loaded.model.hf_device_map.values()
        assert _max_difference(headmap.capture(loaded, TROPHY), headmap.capture(whole, TROPHY)) <= TOL
    with pytest.raises(HeadmapError, match="offloaded"):
        prune_heads(spread, {layer: [2]})


@pytest.mark.parametrize(
    "options,message",
    [
        ({"device": "cpu", "device_map": "auto"}, "not both"),
        ({"device_map": {"model": "disk"}}, "offload_folder"),
        ({"device_map": "everywhere"}, "unknown device_map"),
        ({"max_memory": {"cpu": "1GB"}}, "give device_map too"),
        ({"dtype": "int8"}, "float32, bfloat16, float16, auto"),
        ({"device": "tpu"}, "unknown device"),
    ],
)
def test_placement_errors_name_the_fix(options, message):
    with pytest.raises(HeadmapError, match=message):
        headmap.load("minilm", **options)
