"""Every capture path against the model's own eager attention, per architecture: <= 1e-5 in float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TROPHY
from tiny_models import CONFIGS, build

from headmap.capture import capture
from headmap.result import Stack

TOL = 1e-5
TEXTS = [TROPHY, "Hi there.", "Attention is correlation, not causation, so read every map with care."]


def eager_maps(eager: torch.nn.Module, tokenizer, text: str, target: str | None = None) -> dict[str, list[torch.Tensor]]:
    enc = tokenizer(text, return_tensors="pt")
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if eager.config.is_encoder_decoder:
        start = eager.config.decoder_start_token_id
        dec = tokenizer(target or text, return_tensors="pt")["input_ids"]
        inputs["decoder_input_ids"] = torch.cat([torch.tensor([[start]]), dec], dim=1)
    with torch.no_grad():
        out = eager(**inputs, output_attentions=True)
    if eager.config.is_encoder_decoder:
        return {"encoder": out.encoder_attentions, "decoder": out.decoder_attentions, "cross": out.cross_attentions}
    return {"layer": out.attentions}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def tiny(request, bert_tokenizer):
    fast, eager = build(request.param, bert_tokenizer)
    return request.param, fast, eager


def test_matches_eager(tiny, bert_tokenizer):
    name, fast, eager = tiny
    assert fast.model.config._attn_implementation != "eager" or name == "gemma2"
    result = capture(fast, TROPHY)
    reference = eager_maps(eager, bert_tokenizer, TROPHY)
    assert {k.stack.value for k in result.keys} == set(reference)
    for layer in result.layers:
        expected = reference[layer.key.stack.value][layer.key.index][0].numpy()
        assert layer.weights.shape == expected.shape
        assert np.abs(layer.weights - expected).max() <= TOL, layer.key.name
        # Not a trivially uniform picture: the comparison must mean something.
        assert layer.weights.max() > 2.0 / layer.weights.shape[-1]


def test_subset_of_layers_heads_rows(tiny, bert_tokenizer):
    name, fast, eager = tiny
    reference = eager_maps(eager, bert_tokenizer, TROPHY)
    stack = next(iter(reference))
    result = capture(fast, TROPHY, layers=[-1], heads=[3, 1], rows=[-1, 2])
    layer = result.layer(f"{stack}.1")
    assert layer.heads == (3, 1)
    n = len(result.query_tokens(layer.key))
    assert layer.rows == (n - 1, 2)
    expected = reference[stack][1][0][[3, 1]][:, [n - 1, 2]].numpy()
    assert np.abs(layer.weights - expected).max() <= TOL


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_equals_single(tiny, side):
    name, fast, _ = tiny
    batch = capture(fast, TEXTS, padding_side=side, batch_size=3)
    for text, got in zip(TEXTS, batch):
        alone = capture(fast, text)
        assert got.source.tokens == alone.source.tokens
        for a, b in zip(got.layers, alone.layers):
            assert a.weights.shape == b.weights.shape
            assert np.abs(a.weights - b.weights).max() <= TOL, (name, side, a.key.name)


def test_rows_sum_to_one(tiny):
    _, fast, _ = tiny
    for layer in capture(fast, TROPHY).layers:
        np.testing.assert_allclose(layer.weights.sum(-1), 1.0, atol=1e-5)


def test_sliding_window_really_cuts(bert_tokenizer):
    fast, _ = build("mistral", bert_tokenizer)
    weights = capture(fast, TROPHY, layers=0).layer(0).weights  # [head, q, k]
    q, k = np.indices(weights.shape[1:])
    assert np.all(weights[:, (q - k) >= 4] == 0)  # window 4: older keys are invisible
    assert np.all(weights[:, k > q] == 0)  # causal


def test_encoder_decoder_stacks(bert_tokenizer):
    fast, eager = build("t5", bert_tokenizer)
    result = capture(fast, TROPHY, target="Die Trophäe passte nicht.")
    assert result.num_layers == {Stack.ENCODER: 2, Stack.DECODER: 2, Stack.CROSS: 2}
    cross = result.layer("cross.1")
    assert cross.weights.shape[1:] == (len(result.target), len(result.source))
    reference = eager_maps(eager, bert_tokenizer, TROPHY, target="Die Trophäe passte nicht.")
    assert np.abs(cross.weights - reference["cross"][1][0].numpy()).max() <= TOL


def test_real_minilm_matches_eager(minilm):
    from transformers import AutoModel

    eager = AutoModel.from_pretrained(minilm.model.name_or_path, attn_implementation="eager", use_safetensors=True)
    assert minilm.model.config._attn_implementation == "sdpa"
    result = capture(minilm, TROPHY)
    reference = eager_maps(eager.eval(), minilm.tokenizer, TROPHY)["layer"]
    worst = max(np.abs(l.weights - reference[i][0].numpy()).max() for i, l in enumerate(result.layers))
    assert worst <= TOL


def test_real_smollm2_matches_eager(smollm2):
    from transformers import AutoModelForCausalLM

    eager = AutoModelForCausalLM.from_pretrained(
        smollm2.model.name_or_path, attn_implementation="eager", use_safetensors=True
    )
    assert smollm2.model.config._attn_implementation == "sdpa"
    result = capture(smollm2, TROPHY)
    reference = eager_maps(eager.eval(), smollm2.tokenizer, TROPHY)["layer"]
    assert len(result.layers) == 30 and result.num_heads == 9
    worst = max(np.abs(l.weights - reference[i][0].numpy()).max() for i, l in enumerate(result.layers))
    assert worst <= TOL


def test_model_keeps_its_implementation_and_hooks_are_removed(minilm):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    capture(minilm, TROPHY, layers=0)
    assert minilm.model.config._attn_implementation == "sdpa"
    assert "get_interface" not in vars(ALL_ATTENTION_FUNCTIONS)
