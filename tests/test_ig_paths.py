"""Integrated Gradients baselines and paths (headmap.attribution.baselines) on tiny random models:
completeness against a direct forward on the baseline embeddings, the ``+first`` path that holds
token 0 fixed, and clear errors for unknown names."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import transformers
from tiny_models import build

import headmap
from headmap.attribution.baselines import KINDS, data_corpus
from headmap.attribution.explain import problem_for
from headmap.attribution.gradients import IntegratedGradients
from headmap.errors import HeadmapError
from headmap.models import LoadedModel

TEXT = "The trophy didn't fit in the suitcase because it was too"
COMPARE = "A bag that is too small."


@pytest.fixture(scope="module")
def llama(bert_tokenizer):
    return build("llama", bert_tokenizer)[0]


@pytest.fixture(scope="module")
def bert(bert_tokenizer):
    return build("bert", bert_tokenizer)[0]


@pytest.fixture(scope="module")
def decoder(smollm2):
    """A tiny random Llama on SmolLM2's tokenizer: no BOS, so token 0 is an ordinary word."""
    config = transformers.LlamaConfig(
        vocab_size=len(smollm2.tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(copy.deepcopy(config))
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 2:
                param.normal_(0.0, 0.3)
    return LoadedModel(model.eval(), smollm2.tokenizer, "tiny-llama-smollm2-tokens")


def direct_baseline(loaded, problem, kind, keep_first):
    """The baseline embeddings built by hand: the fill vector at every ordinary token."""
    layer = loaded.model.get_input_embeddings()
    weight = layer.weight.detach()[: len(loaded.tokenizer)]
    with torch.no_grad():
        x = layer(torch.tensor([problem.ids]))
    if kind == "mask":
        fill = weight[loaded.tokenizer.mask_token_id]
    elif kind == "pad":
        fill = weight[loaded.tokenizer.pad_token_id]
    elif kind == "uniform":
        fill = weight.mean(0)
    elif kind == "zero":
        fill = torch.zeros(weight.shape[1])
    else:
        lines = [s.strip() for s in data_corpus().read_text(encoding="utf-8").splitlines()]
        ids = loaded.tokenizer([s for s in lines if s and not s.startswith("#")], add_special_tokens=False)
        flat = torch.tensor([i for row in ids["input_ids"] for i in row])
        fill = weight[flat].double().mean(0).float()
    base = fill.expand_as(x).clone()
    for i, special in enumerate(problem.tokens.special):
        if special or (keep_first and i == 0):
            base[0, i] = x[0, i]
    return x, base


def direct_output(loaded, problem, embeds):
    with torch.no_grad():
        if problem.target.kind == "cosine":
            base = loaded.model.base_model if hasattr(loaded.model, "base_model") else loaded.model
            a = base(inputs_embeds=embeds).last_hidden_state[0].mean(0)
            return float(torch.nn.functional.cosine_similarity(a, problem.target.compare_vector, dim=0))
        logits = loaded.model(inputs_embeds=embeds).logits[0, problem.position]
        return float(torch.log_softmax(logits.double(), -1)[problem.target.token_id])


CASES = [("decoder", k, f) for k in ("pad", "uniform", "data", "zero") for f in (False, True)] + [
    ("bert", k, False) for k in KINDS
]


@pytest.mark.parametrize(("which", "kind", "keep_first"), CASES)
def test_every_baseline_is_complete_within_the_reported_delta(which, kind, keep_first, request):
    loaded = request.getfixturevalue(which)
    kwargs = {"compare": COMPARE} if which == "bert" else {"target": " big"}
    problem = problem_for(loaded, TEXT, **kwargs)
    name = kind + ("+first" if keep_first else "")
    result = IntegratedGradients(n_steps=16, max_steps=64, baseline=name).attribute(problem)
    info = result.info
    x, base = direct_baseline(loaded, problem, kind, keep_first)
    f_x, f_base = direct_output(loaded, problem, x), direct_output(loaded, problem, base)
    assert info["baseline_output"] == pytest.approx(f_base, abs=1e-4)
    assert info["output"] == pytest.approx(f_x, abs=1e-4)
    gap = f_x - f_base
    # delta is the completeness gap: the scores sum to F(x) - F(baseline) up to it, on the direct numbers.
    assert abs(result.tokens.sum() - gap - info["delta"]) <= 1e-3 * max(1.0, abs(gap))
    assert info["converged"] == (
        abs(info["delta"]) <= 0.05 * max(abs(info["output"] - info["baseline_output"]), 1e-5)
    )
    assert info["converged"] or info["steps"] == 64
    assert [s for s, _ in info["tries"]][-1] == info["steps"] and info["tries"][-1][1] == info["delta"]
    assert info["baseline_name"] == name
    # Kept positions (special tokens, token 0 with +first) score exactly 0.
    kept = info["kept"]
    assert np.all(result.tokens[kept] == 0.0)
    assert (0 in kept) == (keep_first or problem.tokens.special[0])


def test_keep_first_holds_token_0_at_its_embedding_along_the_whole_path(decoder):
    problem = problem_for(decoder, TEXT, " big")
    assert not problem.tokens.special[0]  # SmolLM2's tokenizer adds no BOS: token 0 is a word
    layer = decoder.model.get_input_embeddings()
    with torch.no_grad():
        first = layer(torch.tensor([problem.ids[:1]]))[0, 0]
    seen: list[torch.Tensor] = []

    def record(module, args, kwargs):
        if kwargs.get("inputs_embeds") is not None:  # F(x) itself runs on the ids
            seen.append(kwargs["inputs_embeds"][:, 0].detach().clone())

    handle = decoder.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        result = IntegratedGradients(n_steps=8, max_steps=8, baseline="uniform+first").attribute(problem)
        plain = IntegratedGradients(n_steps=8, max_steps=8, baseline="uniform").attribute(problem)
    finally:
        handle.remove()
    kept_rows = torch.cat(seen[: len(seen) // 2])
    assert kept_rows.shape[0] >= 8  # every interpolation step (and the delta's two forwards)
    assert torch.equal(kept_rows, first.expand_as(kept_rows))
    assert result.tokens[0] == 0.0 and result.info["kept"] == [0]
    assert plain.tokens[0] != 0.0  # without +first token 0 is interpolated and scored
    other_rows = torch.cat(seen[len(seen) // 2 :])
    assert not torch.equal(other_rows, first.expand_as(other_rows))


@pytest.mark.parametrize("bad", ["blur", "mask+sink", "auto+first", "", "uniform+first+first", 2.5, True])
def test_an_unknown_baseline_is_one_clear_error(llama, bad):
    problem = problem_for(llama, TEXT, 2000)
    with pytest.raises(HeadmapError, match="unknown IG baseline") as caught:
        IntegratedGradients(n_steps=4, max_steps=4, baseline=bad).attribute(problem)
    assert "'uniform'" in str(caught.value) and "+first" in str(caught.value)


def test_baseline_errors_name_the_fix(decoder, llama):
    with pytest.raises(HeadmapError, match="no mask token"):
        headmap.explain(decoder, TEXT, " big", methods=["ig"], baseline="mask")
    with pytest.raises(HeadmapError, match="out of range"):
        headmap.explain(llama, TEXT, 2000, methods=["ig"], baseline=10**9)


def test_explain_takes_the_new_baselines_and_shows_them(llama):
    ex = headmap.explain(llama, TEXT, 2000, methods=["ig"], n_steps=8, max_steps=8, baseline="data+first")
    assert ex.info["ig"]["baseline_name"] == "data+first"
    assert "data+first" in " ".join(ex.caveats())
