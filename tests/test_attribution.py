"""Attribution methods on values: each against a direct computation on tiny random models (their
eager twins give the attention weights and their gradients), and hand-built cases worked out by hand."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import transformers
from tiny_models import _COMMON, build

from headmap.attribution import explain
from headmap.attribution.flow import max_flows
from headmap.attribution.rollout import augment, rollout
from headmap.attribution.target import encode_text
from headmap.errors import HeadmapError
from headmap.models import LoadedModel
from headmap.view.words import word_groups

TEXT = "The trophy didn't fit in the suitcase because it was too big."
COMPARE = "A bag that is too small."
TOL = 1e-5


@pytest.fixture(scope="module")
def llama(bert_tokenizer):
    return build("llama", bert_tokenizer)


@pytest.fixture(scope="module")
def bert(bert_tokenizer):
    return build("bert", bert_tokenizer)


@pytest.fixture(scope="module")
def masked_lm(bert_tokenizer):
    """A tiny random BertForMaskedLM, and its eager twin."""
    config = transformers.BertConfig(**_COMMON, max_position_embeddings=64)
    torch.manual_seed(0)
    fast = transformers.BertForMaskedLM(copy.deepcopy(config))
    with torch.no_grad():
        for param in fast.parameters():
            if param.ndim == 2:
                param.normal_(0.0, 0.3)
    eager_config = copy.deepcopy(config)
    eager_config._attn_implementation = "eager"
    eager = transformers.BertForMaskedLM(eager_config)
    eager.load_state_dict(fast.state_dict())
    return LoadedModel(fast.eval(), bert_tokenizer, "tiny-bert-mlm"), eager.eval()


def ids_of(loaded, text=TEXT):
    ids, tokens = encode_text(loaded, text)
    return ids, tokens


def eager_attentions(eager, ids):
    """Head-averaged eager maps ``[layer][query, key]`` and the raw per-layer tensors."""
    with torch.no_grad():
        out = eager(input_ids=torch.tensor([ids]), output_attentions=True)
    return [a[0].double().mean(0).numpy() for a in out.attentions]


def next_logprob(model, ids, position, token):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits
    return float(torch.log_softmax(logits[0, position].float(), -1)[token])


def cosine(model, ids, compare_ids):
    base = getattr(model, "base_model", model)
    with torch.no_grad():
        a = base(input_ids=torch.tensor([ids])).last_hidden_state[0].mean(0)
        b = base(input_ids=torch.tensor([compare_ids])).last_hidden_state[0].mean(0)
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


# -- rollout and flow --------------------------------------------------------------------------
def test_rollout_of_identity_attention_is_the_identity():
    eye = np.eye(5)
    assert np.array_equal(augment(eye), eye)
    assert np.array_equal(rollout([eye] * 4), eye)


def test_rollout_is_the_product_of_augmented_maps_by_hand():
    a1 = np.array([[1.0, 0.0], [0.25, 0.75]])
    a2 = np.array([[1.0, 0.0], [0.5, 0.5]])
    aug1 = np.array([[1.0, 0.0], [0.125, 0.875]])  # 0.5 A + 0.5 I; rows already sum to 1
    aug2 = np.array([[1.0, 0.0], [0.25, 0.75]])
    assert np.allclose(augment(a1), aug1) and np.allclose(augment(a2), aug2)
    # Newest layer on the left: the second row is [0.25 + 0.75 * 0.125, 0.75 * 0.875].
    assert np.allclose(rollout([a1, a2]), [[1.0, 0.0], [0.34375, 0.65625]], atol=1e-15)


@pytest.mark.parametrize("which", ["llama", "bert"])
def test_rollout_equals_a_direct_matrix_product(which, llama, bert):
    loaded, eager = {"llama": llama, "bert": bert}[which]
    kwargs = {"compare": COMPARE} if which == "bert" else {}
    ex = explain(loaded, TEXT, methods=["rollout"], **kwargs)
    ids, _ = ids_of(loaded)
    joint = np.eye(len(ids))
    for mean in eager_attentions(eager, ids):
        aug = 0.5 * mean + 0.5 * np.eye(len(ids))
        joint = (aug / aug.sum(-1, keepdims=True)) @ joint
    # The explained row: the last token (decoder), the mean of all rows (mean-pooled embedding).
    expected = joint[-1] if which == "llama" else joint.mean(0)
    assert np.abs(ex.token_scores["rollout"] - expected).max() <= TOL
    assert ex.token_scores["rollout"].sum() == pytest.approx(1.0, abs=1e-9)


def test_flow_on_a_hand_built_two_layer_graph():
    aug1 = np.array([[1.0, 0.0], [0.5, 0.5]])
    aug2 = np.array([[0.6, 0.4], [0.2, 0.8]])
    # From the top of token 1: to input 0 via (1,0) min(0.2, 1.0) plus via (1,1) min(0.8, 0.5);
    # to input 1 only via (1,1) -> (0,1), capacity 0.5.
    assert np.allclose(max_flows([aug1, aug2], np.array([0.0, 1.0])), [0.7, 0.5], atol=1e-12)
    # Pooled source (0.5 into each top node): input 0 takes all of it; input 1 the 0.5 edge.
    assert np.allclose(max_flows([aug1, aug2], np.array([0.5, 0.5])), [1.0, 0.5], atol=1e-12)


def test_flow_method_normalizes_the_max_flows_of_the_models_maps(llama):
    loaded, eager = llama
    ex = explain(loaded, TEXT, methods=["flow"])
    ids, _ = ids_of(loaded)
    flows = max_flows([augment(m) for m in eager_attentions(eager, ids)], np.eye(len(ids))[-1])
    assert np.abs(ex.token_scores["flow"] - flows / flows.sum()).max() <= TOL


def test_flow_refuses_long_texts_naming_rollout(llama):
    with pytest.raises(HeadmapError, match="rollout"):
        explain(llama[0], "word " * 60, methods=["flow"])
    ex = explain(llama[0], "word " * 60, methods=None, n_steps=4, max_steps=4)
    assert "flow" not in ex.methods and any("flow skipped" in n for n in ex.notes)


# -- attention and attention x gradient ----------------------------------------------------------
@pytest.mark.parametrize("heads", [None, (1, 3)])
def test_attention_is_the_explained_row_of_the_eager_map(heads, llama):
    loaded, eager = llama
    ex = explain(loaded, TEXT, methods=["attention"], heads=heads, layers=(0, -1))
    ids, _ = ids_of(loaded)
    with torch.no_grad():
        maps = eager(input_ids=torch.tensor([ids]), output_attentions=True).attentions
    picked = list(heads) if heads else slice(None)
    expected = np.mean([m[0, picked, -1].double().mean(0).numpy() for m in maps], axis=0)
    assert np.abs(ex.token_scores["attention"] - expected).max() <= TOL


@pytest.mark.parametrize("which", ["llama", "bert"])
def test_attention_x_gradient_equals_eager_autograd(which, llama, bert):
    loaded, eager = {"llama": llama, "bert": bert}[which]
    ids, _ = ids_of(loaded)
    kwargs = {"compare": COMPARE} if which == "bert" else {"target": 2000}
    ex = explain(loaded, TEXT, methods=["attention_x_gradient"], **kwargs)
    out = eager(input_ids=torch.tensor([ids]), output_attentions=True, output_hidden_states=True)
    attention = out.attentions[-1]  # [1, head, query, key], the tensor the eager model multiplies by V
    if which == "llama":
        value = torch.log_softmax(out.logits[0, -1], -1)[2000]
    else:
        compare_ids, _ = ids_of(loaded, COMPARE)
        with torch.no_grad():
            other = eager(input_ids=torch.tensor([compare_ids])).last_hidden_state[0].mean(0)
        value = torch.nn.functional.cosine_similarity(out.last_hidden_state[0].mean(0), other, dim=0)
    (grad,) = torch.autograd.grad(value, [attention])
    expected = (attention * grad)[0].double().sum((0, 1)).detach().numpy()
    assert np.abs(ex.token_scores["attention_x_gradient"] - expected).max() <= TOL
    assert np.abs(expected).max() > 1e-4  # not a vanishing check


def test_attention_x_gradient_refuses_eager_weights_models(bert_tokenizer):
    bloom, _ = build("bloom", bert_tokenizer)
    with pytest.raises(HeadmapError, match="ig or input_x_gradient"):
        explain(bloom, TEXT, methods=["attention_x_gradient"])


# -- gradients ------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["llama", "bert", "masked"])
def test_ig_completeness_holds_within_the_reported_delta(which, llama, bert, masked_lm):
    loaded = {"llama": llama, "bert": bert, "masked": masked_lm}[which][0]
    text = TEXT.replace("big", "[MASK]") if which == "masked" else TEXT
    kwargs = {"compare": COMPARE} if which == "bert" else {}
    ex = explain(loaded, text, methods=["ig"], n_steps=8, max_steps=256, **kwargs)
    ig = ex.info["ig"]
    gap = ex.output - ex.baseline_output
    total = ex.token_scores["ig"].sum()
    assert abs(total - gap - ig["delta"]) <= 1e-4 * max(1.0, abs(gap))  # delta is the completeness gap
    assert ig["converged"] == (abs(ig["delta"]) <= 0.05 * abs(gap))
    assert ig["converged"] or ig["steps"] == 256
    assert ig["steps"] in (8, 16, 32, 64, 128, 256)
    # The baseline keeps special tokens: their IG score is exactly zero.
    special = np.array(ex.tokens.special)
    assert np.all(ex.token_scores["ig"][special] == 0.0)
    # F(baseline) is the model's own output on the baseline ids.
    ids, tokens = ids_of(loaded, text)
    keep = [
        t
        if (s or (which == "masked" and t == loaded.tokenizer.mask_token_id))
        else loaded.tokenizer.mask_token_id
        for t, s in zip(ids, tokens.special)
    ]
    if which == "bert":
        direct = cosine(loaded.model, keep, ids_of(loaded, COMPARE)[0])
    else:
        direct = next_logprob(loaded.model, keep, ex.target["position"], ex.target["token_id"])
    assert ex.baseline_output == pytest.approx(direct, abs=TOL)


def test_ig_doubles_steps_until_the_rule_holds(llama):
    ex = explain(llama[0], TEXT, methods=["ig"], n_steps=2, max_steps=512)
    ig = ex.info["ig"]
    assert ig["converged"] and ig["steps"] > 2
    smaller = explain(llama[0], TEXT, methods=["ig"], n_steps=ig["steps"] // 2, max_steps=ig["steps"] // 2)
    assert not smaller.info["ig"]["converged"]  # the step before did not meet the rule


def test_ig_equals_captum_on_the_models_own_embedding_layer(llama):
    """The per-call embedding stand-in changes nothing but where captum's hook sits."""
    from captum.attr import LayerIntegratedGradients

    loaded, _ = llama
    ex = explain(loaded, TEXT, 2000, methods=["ig"], n_steps=16, max_steps=16)
    ids, tokens = ids_of(loaded)
    mask_id = loaded.tokenizer.mask_token_id
    base = [t if s else mask_id for t, s in zip(ids, tokens.special)]

    def forward(batch):
        return torch.log_softmax(loaded.model(input_ids=batch).logits[:, -1], -1)[:, 2000]

    method = LayerIntegratedGradients(forward, loaded.model.get_input_embeddings())
    attributions, delta = method.attribute(
        torch.tensor([ids]), baselines=torch.tensor([base]), n_steps=16, return_convergence_delta=True
    )
    assert np.abs(ex.token_scores["ig"] - attributions[0].sum(-1).double().detach().numpy()).max() <= TOL
    assert ex.info["ig"]["delta"] == pytest.approx(float(delta[0]), abs=TOL)


def test_input_x_gradient_equals_embedding_times_gradient(llama):
    loaded, _ = llama
    ids, _ = ids_of(loaded)
    ex = explain(loaded, TEXT, 2000, methods=["input_x_gradient"])
    embeds = loaded.model.get_input_embeddings()(torch.tensor([ids])).detach().requires_grad_(True)
    value = torch.log_softmax(loaded.model(inputs_embeds=embeds).logits[0, -1], -1)[2000]
    (grad,) = torch.autograd.grad(value, [embeds])
    expected = (embeds * grad)[0].sum(-1).double().detach().numpy()
    assert np.abs(ex.token_scores["input_x_gradient"] - expected).max() <= TOL


# -- occlusion ------------------------------------------------------------------------------------
def test_occlusion_equals_rerunning_without_the_word(llama):
    loaded, _ = llama
    ex = explain(loaded, TEXT, " big", methods=["occlusion"])
    ids, tokens = ids_of(loaded)
    token = ex.target["token_id"]
    output = next_logprob(loaded.model, ids, -1, token)
    assert ex.output == pytest.approx(output, abs=TOL)
    for w, group in enumerate(word_groups(tokens)):
        if any(tokens.special[i] for i in group):
            assert np.isnan(ex.word_scores["occlusion"][w])
            continue
        shorter = [t for i, t in enumerate(ids) if i not in group]
        expected = output - next_logprob(loaded.model, shorter, -1, token)
        assert ex.word_scores["occlusion"][w] == pytest.approx(expected, abs=TOL), tokens.tokens[group[0]]
    for i in range(len(ids)):
        if not tokens.special[i]:
            expected = output - next_logprob(loaded.model, ids[:i] + ids[i + 1 :], -1, token)
            assert ex.token_scores["occlusion"][i] == pytest.approx(expected, abs=TOL)


def test_occlusion_at_an_earlier_position_moves_the_position(llama):
    loaded, _ = llama
    ids, tokens = ids_of(loaded)
    position = 5
    ex = explain(
        loaded,
        TEXT,
        2000,
        position=position,
        methods=["occlusion", "attention", "ig"],
        n_steps=8,
        max_steps=8,
    )
    output = next_logprob(loaded.model, ids, position, 2000)
    assert ex.output == pytest.approx(output, abs=TOL)
    for i in range(1, len(ids) - 1):
        if i > position:  # after the explained position: the causal model cannot see it
            assert ex.token_scores["occlusion"][i] == 0.0
            assert ex.token_scores["attention"][i] == 0.0 and ex.token_scores["ig"][i] == 0.0
            continue
        moved = position - 1
        expected = output - next_logprob(loaded.model, ids[:i] + ids[i + 1 :], moved, 2000)
        assert ex.token_scores["occlusion"][i] == pytest.approx(expected, abs=TOL)
    assert ex.visible.tolist() == [i <= position for i in range(len(ids))]
    assert ex.to_tokens().included.sum() == position  # [CLS] left out, tokens 1..5 in


def test_occlusion_of_a_mean_pooled_cosine(bert):
    loaded, _ = bert
    ex = explain(loaded, TEXT, compare=COMPARE, methods=["occlusion"])
    ids, tokens = ids_of(loaded)
    compare_ids, _ = ids_of(loaded, COMPARE)
    output = cosine(loaded.model, ids, compare_ids)
    assert ex.output == pytest.approx(output, abs=TOL)
    for w, group in enumerate(word_groups(tokens)):
        if not tokens.special[group[0]]:
            shorter = [t for i, t in enumerate(ids) if i not in group]
            expected = output - cosine(loaded.model, shorter, compare_ids)
            assert ex.word_scores["occlusion"][w] == pytest.approx(expected, abs=TOL)


def test_masked_lm_explains_the_mask_and_never_occludes_it(masked_lm):
    loaded, _ = masked_lm
    text = "The trophy didn't fit because it was too [MASK]."
    ids, tokens = ids_of(loaded, text)
    where = ids.index(loaded.tokenizer.mask_token_id)
    ex = explain(loaded, text, methods=["occlusion", "attention"])
    assert ex.target["kind"] == "masked-token" and ex.target["position"] == where
    with torch.no_grad():
        logits = loaded.model(input_ids=torch.tensor([ids])).logits[0, where]
    assert ex.target["token_id"] == int(logits.argmax())
    assert ex.output == pytest.approx(float(torch.log_softmax(logits, -1).max()), abs=TOL)
    assert np.isnan(ex.token_scores["occlusion"][where])
    # Removing a word before the [MASK] moves it left by the word's length.
    i = 2
    shorter = ids[:i] + ids[i + 1 :]
    with torch.no_grad():
        moved = torch.log_softmax(loaded.model(input_ids=torch.tensor([shorter])).logits[0, where - 1], -1)
    assert ex.token_scores["occlusion"][i] == pytest.approx(
        ex.output - float(moved[ex.target["token_id"]]), abs=TOL
    )


def test_a_custom_scalar_function(llama):
    loaded, _ = llama

    def last_logit(output, inputs):
        rows = torch.arange(inputs.ids.shape[0])
        return output.logits[rows, inputs.position, 7]

    ex = explain(loaded, TEXT, last_logit, methods=["occlusion", "ig"], n_steps=8, max_steps=8)
    ids, _ = ids_of(loaded)
    with torch.no_grad():
        direct = float(loaded.model(input_ids=torch.tensor([ids])).logits[0, -1, 7])
    assert ex.target["kind"] == "custom" and ex.output == pytest.approx(direct, abs=TOL)
    with pytest.raises(HeadmapError, match="one number per variant"):
        explain(loaded, TEXT, lambda output, inputs: output.logits.sum(), methods=["occlusion"])
