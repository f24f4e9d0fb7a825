"""The bias probe on the bundled models: exact chat-template prompts, outputs, attention and ablation
equal direct computations on SmolLM2; MiniLM with a compare text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from headmap import ablate, bias_probe, capture

pytestmark = pytest.mark.slow

CORPUS = Path(__file__).resolve().parent.parent / "corpora" / "bias"
TEMPLATE = (CORPUS / "accountant.txt").read_text(encoding="utf-8").rstrip("\n")
EVIDENCE = "ten years of experience in accounting"
GROUPS = {"female": ["Jennifer"], "male": ["James", "Christopher"]}


def next_logprob(loaded, ids, token_id):
    with torch.no_grad():
        logits = loaded.model(input_ids=torch.tensor([list(ids)])).logits[0, -1]
    return float(torch.log_softmax(logits.double(), dim=-1)[token_id])


def test_shipped_example_files_are_well_formed():
    from headmap.apps.bias import read_names
    from headmap.apps.bias.inputs import as_groups, check_template

    female, male = read_names(CORPUS / "names_female.txt"), read_names(CORPUS / "names_male.txt")
    assert len(female) == len(male) == 24
    as_groups({"female": female, "male": male})  # disjoint, no repeats
    check_template(TEMPLATE, EVIDENCE)


def test_smollm2_chat_prompts_outputs_attention_and_ablation(smollm2):
    r = bias_probe(
        smollm2,
        TEMPLATE,
        GROUPS,
        EVIDENCE,
        target="Yes",
        chat=True,
        layers=[21, 28],
        k=2,
        controls=0,
        resamples=500,
    )
    tok = smollm2.tokenizer
    token_id = tok("Yes", add_special_tokens=False)["input_ids"][0]
    assert r.layers == ("layer.21", "layer.28") and len(r.heads) == 9
    for i, p in enumerate(r.prompts):
        message = TEMPLATE.replace("{name}", p.name)
        expected = tok.apply_chat_template(
            [{"role": "user", "content": message}], tokenize=True, add_generation_prompt=True
        )
        expected = expected["input_ids"] if hasattr(expected, "keys") else expected
        assert p.ids == list(expected) and p.text.endswith("<|im_start|>assistant\n")
        assert "".join(p.encoded.tokens.tokens[j] for j in p.name_tokens) == p.name * 2  # both slots
        assert r.outputs[i] == pytest.approx(next_logprob(smollm2, p.ids, token_id), abs=1e-5)
        with ablate(smollm2, list(r.ablated)):
            assert r.ablated_outputs[i] == pytest.approx(next_logprob(smollm2, p.ids, token_id), abs=1e-5)
        direct = (
            capture(smollm2, p.encoded, layers=[28], rows=[-1]).layers[0].weights[:, 0].astype(np.float64)
        )
        assert np.abs(r.name_attention[i, 1] - direct[:, list(p.name_tokens)].sum(-1)).max() < 1e-5
        assert np.abs(r.evidence_attention[i, 1] - direct[:, list(p.evidence_tokens)].sum(-1)).max() < 1e-5
    assert all(layer in ("layer.21", "layer.28") for layer, _ in r.ablated)


def test_minilm_compares_the_cosine(minilm):
    r = bias_probe(
        minilm,
        TEMPLATE,
        GROUPS,
        EVIDENCE,
        compare="A highly qualified accountant.",
        layers=[5],
        k=2,
        controls=0,
        resamples=500,
    )

    def pooled(text):
        enc = minilm.tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            return minilm.model(**enc).last_hidden_state[0].mean(0)

    ref = pooled("A highly qualified accountant.")
    for i, p in enumerate(r.prompts):
        assert p.ids == minilm.tokenizer(p.text)["input_ids"]
        expected = torch.nn.functional.cosine_similarity(pooled(p.text), ref, dim=0)
        assert r.outputs[i] == pytest.approx(float(expected), abs=1e-5)
    assert r.target["kind"] == "cosine" and r.control_outputs.shape == (0, 3)
