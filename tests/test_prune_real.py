"""Head pruning on the two bundled models: the cut model equals the gated one; counts; reload; latency."""

from __future__ import annotations

import copy

import pytest
import torch

import headmap
from headmap.apps.prune import prune_heads
from headmap.apps.prune.physical import max_difference, measure_latency, parameter_count
from headmap.apps.prune.save import save_pruned
from headmap.result import LayerKey, Stack

HELD = [
    "The carpenter measured the door frame twice before cutting the wood.",
    "A heavy fog delayed every flight at the airport until noon.",
    "Fresh bread sells out early on Saturdays.",
]


def _key(i):
    return LayerKey(Stack.SELF, i)


@pytest.mark.slow
def test_minilm_cut_equals_gated_reloads_and_captures(minilm, tmp_path):
    heads = {_key(0): [0, 5, 11], _key(3): list(range(1, 12)), _key(5): [7]}
    cut = prune_heads(minilm, heads)
    difference, scale = max_difference(minilm, cut, heads, HELD)
    assert difference <= 1e-5, (difference, scale)
    hidden, dim, removed = 384, 32, 15  # query, key, value rows with their biases; output dense columns
    assert parameter_count(minilm.model) - parameter_count(cut.model) == removed * (
        4 * hidden * dim + 3 * dim
    )
    latency = measure_latency(minilm, cut, HELD, repeats=3)
    assert len(latency.before) == len(latency.after) == 3 and min(latency.before + latency.after) > 0
    folder = save_pruned(cut, tmp_path / "minilm-cut", {"removed": {k.name: v for k, v in heads.items()}})
    again = headmap.load(str(folder))
    result = headmap.capture(again, HELD[0])
    assert [len(layer.heads) for layer in result.layers] == [9, 12, 12, 1, 12, 11]
    ids = minilm.tokenizer(HELD[0], return_tensors="pt")
    with torch.inference_mode():
        torch.testing.assert_close(
            again.model(**ids).last_hidden_state, cut.model(**ids).last_hidden_state, rtol=0, atol=0
        )


@pytest.mark.slow
def test_smollm2_gqa_cut_equals_gated(smollm2):
    # 9 query heads on 3 KV heads: layer 0 loses all of KV group 0 and one head of group 1; layer 15
    # two heads of group 1; layer 29 one head of group 2.
    heads = {_key(0): [0, 1, 2, 3], _key(15): [4, 5], _key(29): [8]}
    cut = prune_heads(smollm2, heads)
    assert cut.model.model.layers[0].self_attn.k_proj.weight.shape[0] == 2 * 64
    hidden, dim = 576, 64
    query_heads, kv_heads = 7, 1  # no biases in SmolLM2's projections
    assert (
        parameter_count(smollm2.model) - parameter_count(cut.model)
        == (query_heads + kv_heads) * 2 * hidden * dim
    )
    # float32: logits up to ~30 after 30 layers; only the order of the sums differs.
    difference, scale = max_difference(smollm2, cut, heads, HELD[:2])
    assert difference <= 1e-5 * scale, (difference, scale)
    # float64: equal to well under 1e-5, which is what "the same model" means.
    double = headmap.LoadedModel(copy.deepcopy(smollm2.model).double(), smollm2.tokenizer, "smollm2-f64")
    exact, _ = max_difference(double, prune_heads(double, heads), heads, HELD[2:])
    assert exact <= 1e-9, exact
