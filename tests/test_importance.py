"""Head importance against finite differences and against gradients taken through independent hooks."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import transformers
from hand_heads import PROJECTIONS, hand_gate, scale_change
from tiny_models import CONFIGS, build

import headmap
from headmap.analysis.importance import head_importance
from headmap.analysis.losses import mask_inputs
from headmap.capture.encoding import encode
from headmap.errors import HeadmapError
from headmap.models import LoadedModel

TEXTS = [
    "The trophy didn't fit in the suitcase.",
    "It was too big, they said.",
    "Rain fell on the quiet town.",
]


def hand_loss(model, tokenizer, text, factors, paths, kind="causal"):  # type: ignore[no-untyped-def]
    """Per-text loss with each head's projection input scaled by hand, without headmap's taps."""
    ids, tokens = encode(tokenizer, text)
    inputs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
    heads: dict[str, list[int]] = {}
    for layer, head in factors:
        heads.setdefault(layer, []).append(head)
    if kind == "mlm":
        inputs = mask_inputs(inputs, [tokens], tokenizer.mask_token_id)
    labels = inputs.pop("labels", None)
    with hand_gate(model, paths, heads, 8, scale_change(factors)):
        logits = model(**inputs).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    if kind == "mlm":
        where = labels[0] >= 0
        return -logp[where].gather(1, labels[0][where, None]).mean()
    return -logp[:-1].gather(1, inputs["input_ids"][0, 1:, None]).mean()


def finite_differences(model, tokenizer, texts, paths, kind="causal", eps=1e-6):  # type: ignore[no-untyped-def]
    out = np.zeros((2, 4))
    for li in range(2):
        for h in range(4):
            key = (f"layer.{li}", h)
            with torch.no_grad():
                slopes = [
                    (
                        hand_loss(model, tokenizer, t, {key: 1 + eps}, paths, kind)
                        - hand_loss(model, tokenizer, t, {key: 1 - eps}, paths, kind)
                    ).item()
                    / (2 * eps)
                    for t in texts
                ]
            out[li, h] = np.mean(np.abs(slopes))
    return out


def test_next_token_importance_equals_finite_differences(bert_tokenizer):
    # GPT-2 computes in float64 end to end (Llama's RMSNorm would round through float32).
    fast, _ = build("gpt2", bert_tokenizer)
    fast.model.double()
    result = head_importance(fast, TEXTS, batch_size=2)
    assert result.loss == "next-token cross-entropy"
    expected = finite_differences(fast.model, bert_tokenizer, TEXTS, PROJECTIONS["gpt2"](2))
    np.testing.assert_allclose(result.raw, expected, rtol=1e-6, atol=1e-9)
    assert result.raw.min() > 0
    np.testing.assert_allclose(np.linalg.norm(result.normalized, axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(
        result.normalized, result.raw / np.linalg.norm(result.raw, axis=1, keepdims=True)
    )
    single = head_importance(fast, TEXTS, batch_size=1)  # per-text gates: batching changes nothing
    np.testing.assert_allclose(single.raw, result.raw, rtol=1e-10)


def test_masked_lm_importance_equals_finite_differences(bert_tokenizer):
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(copy.deepcopy(CONFIGS["bert"])).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.3)
    loaded = LoadedModel(model, bert_tokenizer, "tiny-bert-mlm")
    result = head_importance(loaded, TEXTS, batch_size=3)
    assert result.loss.startswith("masked-LM")
    paths = {k: "bert." + v for k, v in PROJECTIONS["bert"](2).items()}
    expected = finite_differences(model, bert_tokenizer, TEXTS, paths, kind="mlm")
    np.testing.assert_allclose(result.raw, expected, rtol=1e-6, atol=1e-9)


def test_gradients_and_modes_are_left_alone(bert_tokenizer):
    fast, _ = build("llama", bert_tokenizer)
    model = fast.model
    model.train()
    model.model.layers[0].eval()  # a part kept in eval mode while the rest trains
    marker = torch.full_like(model.lm_head.weight, 0.5)
    model.lm_head.weight.grad = marker.clone()
    modes = [m.training for m in model.modules()]
    head_importance(fast, TEXTS[:2])
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(model.lm_head.weight.grad, marker)
    assert all(p.grad is None for n, p in model.named_parameters() if n != "lm_head.weight")
    model.eval()
    model.lm_head.weight.grad = None


@pytest.mark.slow
def test_user_loss_on_minilm_equals_gradients_through_hooks(minilm):
    """MiniLM has no LM head: importance of each head for the cosine similarity of the mean-pooled
    embedding to an anchor sentence's, against gradients taken through projection hooks."""
    tok, model = minilm.tokenizer, minilm.model
    with torch.no_grad():
        enc = tok("A storm closed the harbour for two days.", return_tensors="pt")
        hidden = model(**enc).last_hidden_state[0]
        anchor = hidden.mean(0)

    def loss(output, inputs):  # type: ignore[no-untyped-def]
        mask = inputs["attention_mask"].unsqueeze(-1).to(output.last_hidden_state.dtype)
        pooled = (output.last_hidden_state * mask).sum(1) / mask.sum(1)
        return 1 - torch.nn.functional.cosine_similarity(pooled, anchor[None], dim=-1)

    with pytest.raises(HeadmapError, match="no language-model head"):
        head_importance(minilm, TEXTS)
    result = head_importance(minilm, TEXTS, loss=loss, batch_size=3)
    assert result.loss.startswith("user function")
    paths = {f"layer.{i}": f"encoder.layer.{i}.attention.output.dense" for i in range(6)}
    expected = np.zeros((6, 12))
    for text in TEXTS:
        gates = {(f"layer.{li}", h): torch.ones((), requires_grad=True) for li in range(6) for h in range(12)}
        ids, _ = encode(tok, text)
        inputs = {
            "input_ids": torch.tensor([ids]),
            "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
        }
        with hand_gate(
            model, paths, {f"layer.{li}": list(range(12)) for li in range(6)}, 32, scale_change(gates)
        ):
            value = loss(model(**inputs), inputs)[0]
        grads = torch.autograd.grad(value, list(gates.values()))
        expected += np.abs(np.array([g.item() for g in grads])).reshape(6, 12) / len(TEXTS)
    np.testing.assert_allclose(result.raw, expected, rtol=1e-4, atol=1e-7)
    assert all(p.grad is None for p in model.parameters())


def test_report_adds_importance_columns(bert_tokenizer, tmp_path):
    fast, _ = build("llama", bert_tokenizer)
    report = headmap.head_report(fast, TEXTS, importance=True, out=tmp_path / "r")
    direct = head_importance(fast, TEXTS)
    np.testing.assert_allclose(report.table["importance"].to_numpy().reshape(2, 4), direct.raw, rtol=1e-6)
    np.testing.assert_allclose(
        report.table["importance_norm"].to_numpy().reshape(2, 4), direct.normalized, rtol=1e-6
    )
    assert (tmp_path / "r" / "importance.png").exists()
    assert len(list((tmp_path / "r" / "partials").glob("importance-*.safetensors"))) == 1
    assert "next-token cross-entropy" in (tmp_path / "r" / "report.html").read_text(encoding="utf-8")


def test_importance_errors(bert_tokenizer):
    fast, _ = build("llama", bert_tokenizer)
    with pytest.raises(HeadmapError, match="one value per text"):
        head_importance(fast, TEXTS, loss=lambda out, inputs: out.logits.mean())
    with pytest.raises(HeadmapError, match="does not depend on the model"):
        head_importance(fast, TEXTS, loss=lambda out, inputs: torch.zeros(len(inputs["input_ids"])))
    with pytest.raises(HeadmapError, match="unknown loss"):
        head_importance(fast, TEXTS, loss="perplexity")
    t5, _ = build("t5", bert_tokenizer)
    with pytest.raises(HeadmapError, match="encoder-decoder model: pass loss="):
        head_importance(t5, TEXTS)
    bloom, _ = build("bloom", bert_tokenizer)
    with pytest.raises(HeadmapError, match="head importance needs a model whose attention"):
        head_importance(bloom, TEXTS)
