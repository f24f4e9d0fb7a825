"""Every capture path against the model's own eager attention, per architecture: <= 1e-5 in float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TROPHY
from tiny_models import CONFIGS, EAGER_ONLY, PATHS, build

from headmap.capture import capture
from headmap.capture.discovery import discover
from headmap.capture.tap import CapturePath, module_scope, tap_around
from headmap.errors import HeadmapError
from headmap.result import Stack

TOL = 1e-5
TEXTS = [TROPHY, "Hi there.", "Attention is correlation, not causation, so read every map with care."]


def eager_maps(
    eager: torch.nn.Module, tokenizer, text: str, target: str | None = None
) -> dict[str, list[torch.Tensor]]:
    enc = tokenizer(text, return_tensors="pt")
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if eager.config.is_encoder_decoder:
        start = eager.config.decoder_start_token_id
        dec = tokenizer(target or text, return_tensors="pt")["input_ids"]
        inputs["decoder_input_ids"] = torch.cat([torch.tensor([[start]]), dec], dim=1)
    with torch.no_grad():
        out = eager(**inputs, output_attentions=True)
    if eager.config.is_encoder_decoder:
        return {
            "encoder": out.encoder_attentions,
            "decoder": out.decoder_attentions,
            "cross": out.cross_attentions,
        }
    return {"layer": out.attentions}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def tiny(request, bert_tokenizer):
    fast, eager = build(request.param, bert_tokenizer)
    return request.param, fast, eager


def test_matches_eager(tiny, bert_tokenizer):
    name, fast, eager = tiny
    # Every model runs its own default implementation: SDPA where it has one.
    assert (fast.model.config._attn_implementation == "eager") == (name in EAGER_ONLY)
    assert {s.path.value for s in discover(fast.model).sites.values()} == {PATHS.get(name, "dispatch")}
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
    last = len(reference[stack]) - 1
    result = capture(fast, TROPHY, layers=[-1], heads=[3, 1], rows=[-1, 2])
    layer = result.layer(f"{stack}.{last}")
    assert layer.heads == (3, 1)
    n = len(result.query_tokens(layer.key))
    assert layer.rows == (n - 1, 2)
    expected = reference[stack][last][0][[3, 1]][:, [n - 1, 2]].numpy()
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

    eager = AutoModel.from_pretrained(
        minilm.model.name_or_path, attn_implementation="eager", use_safetensors=True
    )
    assert minilm.model.config._attn_implementation == "sdpa"
    result = capture(minilm, TROPHY)
    reference = eager_maps(eager.eval(), minilm.tokenizer, TROPHY)["layer"]
    worst = max(np.abs(lm.weights - reference[i][0].numpy()).max() for i, lm in enumerate(result.layers))
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
    worst = max(np.abs(lm.weights - reference[i][0].numpy()).max() for i, lm in enumerate(result.layers))
    assert worst <= TOL


def test_model_keeps_its_implementation_and_hooks_are_removed(minilm):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    capture(minilm, TROPHY, layers=0)
    assert minilm.model.config._attn_implementation == "sdpa"
    assert "get_interface" not in vars(ALL_ATTENTION_FUNCTIONS)


def _kernel_outputs(fast, text: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(value, output)`` of every attention kernel call, as the model really ran it."""
    seen = []

    def record(call, proceed):
        out = proceed()
        seen.append((call.value, out))
        return out

    arch = discover(fast.model)
    modules = [s.module for s in arch.sites.values()]
    enc = fast.tokenizer(text, return_tensors="pt")
    with torch.no_grad(), tap_around(record, modules):
        if CapturePath.TORCH_SDPA in arch.paths:
            with module_scope(modules):
                fast.model(**enc)
        else:
            fast.model(**enc)
    return seen


@pytest.mark.parametrize("name", ["falcon_alibi", "falcon", "llama", "bert"])
def test_weights_reproduce_the_kernel_output(name, bert_tokenizer):
    """Independent of any eager path: captured weights times the values give what the kernel gave."""
    fast, _ = build(name, bert_tokenizer)
    result = capture(fast, TROPHY)
    outputs = _kernel_outputs(fast, TROPHY)
    assert len(outputs) == len(result.layers)
    for layer, (value, out) in zip(result.layers, outputs):
        value = value[0].float()  # [kv_head, key, dim]
        value = value.repeat_interleave(result.num_heads // value.shape[0], dim=0)
        rebuilt = torch.matmul(torch.from_numpy(layer.weights), value)  # [head, query, dim]
        assert (rebuilt - out[0].transpose(0, 1)).abs().max().item() <= TOL, (name, layer.key.name)


def test_longest_text_the_position_table_allows(bert_tokenizer):
    """RoBERTa's positions start at padding_idx + 1, so a 66-slot table takes 64 tokens, not 66."""
    fast, eager = build("roberta", bert_tokenizer)
    words = " ".join(["word"] * 62)  # 62 pieces + [CLS] + [SEP] = 64 tokens
    result = capture(fast, words)
    assert len(result.source) == 64
    reference = eager_maps(eager, bert_tokenizer, words)["layer"]
    assert (
        max(np.abs(lm.weights - reference[i][0].numpy()).max() for i, lm in enumerate(result.layers)) <= TOL
    )

    with pytest.raises(HeadmapError, match="at most 64"):
        capture(fast, words + " word")


@pytest.mark.parametrize(
    "name, path", [("bloom", "eager-weights"), ("falcon", "torch-sdpa"), ("llama", None)]
)
def test_result_says_which_path_it_used(name, path, bert_tokenizer):
    fast, _ = build(name, bert_tokenizer)
    notes = capture(fast, TROPHY, layers=0).notes
    if path is None:
        assert not any("capture path" in n for n in notes)
    else:
        assert any(f"capture path: {path}" in n for n in notes)


def test_shared_module_gives_one_map_per_layer(bert_tokenizer):
    fast, eager = build("albert", bert_tokenizer)
    arch = discover(fast.model)
    assert len({id(s.module) for s in arch.sites.values()}) == 1 and len(arch.sites) == 3
    result = capture(fast, TROPHY, layers=[1, 2])
    reference = eager_maps(eager, bert_tokenizer, TROPHY)["layer"]
    for layer in result.layers:
        assert np.abs(layer.weights - reference[layer.key.index][0].numpy()).max() <= TOL
    assert np.abs(result.layers[0].weights - result.layers[1].weights).max() > 1e-3  # really different layers
