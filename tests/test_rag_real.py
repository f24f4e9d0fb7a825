"""The planted RAG example on SmolLM2: the answer is in exactly one chunk, and the causal check finds it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from headmap import HeadmapError, rag
from headmap.apps.rag import read_chunks
from headmap.apps.rag.prompt import build_prompt, with_answer
from headmap.capture import capture

pytestmark = pytest.mark.slow

VAULT = Path(__file__).resolve().parent.parent / "corpora" / "rag" / "vault.jsonl"
QUESTION = "What is the access code for the vault?"


@pytest.fixture(scope="module")
def vault(smollm2):
    return rag(smollm2, QUESTION, VAULT)  # the answer is generated greedily


def test_the_causal_check_finds_the_planted_chunk(vault):
    assert [c.id for c in vault.chunks] == ["lobby", "garage", "vault", "wifi", "locker"]
    assert "7428" in vault.answer and not vault.truncated and vault.generated
    drop = vault.table.set_index("id")["logprob_drop"]
    assert drop.idxmax() == "vault"
    # Without the vault chunk the code is a guess: the answer loses several nats; no other chunk matters as much.
    assert drop["vault"] > 5.0 and drop.drop("vault").abs().max() < 1.0
    assert vault.table.set_index("id").loc["vault", "ablation_rank"] == 1
    assert "'vault'" in vault.verdict


def test_chat_template_prompt_and_exact_ids(smollm2, vault):
    assert vault.chat_template and vault.prompt.startswith("<|im_start|>")
    assert vault.prompt.endswith("<|im_start|>assistant\n")
    assert list(vault.prompt_ids) == smollm2.tokenizer(vault.prompt, add_special_tokens=False)["input_ids"]
    assert smollm2.tokenizer.decode(list(vault.answer_ids)) == vault.answer
    assert "[3] The access code for the vault is 7428." in vault.prompt
    assert "7428" not in vault.prompts_without[2] and "[3] Visitors" in vault.prompts_without[2]


def test_mass_and_logprobs_equal_direct_computations(smollm2, vault):
    chunks = read_chunks(VAULT)
    prompt = build_prompt(smollm2.tokenizer, QUESTION, [c.text for c in chunks])
    full = with_answer(prompt, vault.answer_ids, smollm2.tokenizer)
    p, a = len(prompt), len(vault.answer_ids)
    layers = [0, 7, 14]
    direct = capture(smollm2, full, layers=layers, rows=list(range(p - 1, p + a - 1)))
    inside = np.concatenate([np.arange(f, s) for f, s in prompt.chunk_tokens])
    for layer, index in zip(direct.layers, layers):
        w = layer.weights.astype(np.float64)
        assert np.abs(vault.mass[index].sum(-1) - w[:, :, inside].sum(-1)).max() < 1e-5
        for c, (f, s) in enumerate(prompt.chunk_tokens):
            assert np.abs(vault.mass[index, :, :, c] - w[:, :, f:s].sum(-1)).max() < 1e-5
    for text, expected in (
        (vault.prompt, vault.answer_logprob),
        (vault.prompts_without[2], vault.logprob_without[2]),
    ):
        ids = smollm2.tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = smollm2.model(input_ids=torch.tensor([ids + list(vault.answer_ids)])).logits[0]
        logp = torch.log_softmax(logits.double(), dim=-1)
        direct_sum = sum(float(logp[len(ids) - 1 + t, tok]) for t, tok in enumerate(vault.answer_ids))
        assert expected == pytest.approx(direct_sum, abs=1e-5)


def test_an_encoder_is_refused(minilm):
    with pytest.raises(HeadmapError, match="not a causal language model"):
        rag(minilm, QUESTION, VAULT, answer="7428")
