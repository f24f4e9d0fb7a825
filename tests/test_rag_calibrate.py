"""AT2-style head weights learned on RAG chunks (``calibrate_rag``, ``headmap calibrate --rag``), checked
against direct eager-attention forwards."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_models import build

import headmap
from headmap.apps.rag import rag
from headmap.apps.rag.calibrate import as_example, calibrate_rag, sample_example
from headmap.apps.rag.prompt import build_prompt, encode_answer, with_answer
from headmap.attribution.calibrated import model_hash
from headmap.cli import main
from headmap.errors import HeadmapError

EXAMPLES = [
    {
        "question": "which room holds the old maps?",
        "chunks": ["the old maps are kept in the library.", "the garage has space for two cars.", "bread is baked at dawn."],
        "answer": "the library",
    },
    {
        "question": "when is bread baked?",
        "chunks": ["the river rose by morning.", "bread is baked at dawn.", "the cat sat on the mat."],
        "answer": "at dawn",
    },
    {
        "question": "where is the spare key?",
        "chunks": ["the spare key is under the mat.", "paris is a big city.", "rain fell all night.", "the dog ran."],
        "answer": "under the mat",
    },
    {
        "question": "who gave him the book?",
        "chunks": ["she gave him the book.", "the fox jumps over the dog."],
        "answer": "she did",
    },
]  # fmt: skip


@pytest.fixture(scope="module")
def models(bert_tokenizer):
    return build("llama", bert_tokenizer)


@pytest.fixture(scope="module")
def calibration(models):
    return calibrate_rag(models[0], EXAMPLES, ablations=6, holdout=0.25, seed=0)


def direct(eager, tokenizer, question, chunks, answer_ids):
    """``(features [chunk, layer, head], summed answer log-probability)`` from one eager forward."""
    prompt = build_prompt(tokenizer, question, chunks)
    ids = torch.tensor([with_answer(prompt, answer_ids, tokenizer).ids])
    p, a = len(prompt), len(answer_ids)
    with torch.no_grad():
        out = eager(input_ids=ids, output_attentions=True)
    rows = slice(p - 1, p + a - 1)  # the positions predicting the answer tokens
    features = np.zeros((len(chunks), len(out.attentions), out.attentions[0].shape[1]))
    for li, att in enumerate(out.attentions):
        for c, (first, stop) in enumerate(prompt.chunk_tokens):
            features[c, li] = att[0, :, rows, first:stop].double().sum(dim=(1, 2)).numpy()
    logp = torch.log_softmax(out.logits[0, rows].double(), dim=-1)
    return features, float(logp[torch.arange(a), torch.tensor(answer_ids)].sum())


def test_a_regression_row_is_a_direct_computation(models, bert_tokenizer):
    fast, eager = models
    example = as_example(EXAMPLES[2])
    sample = sample_example(fast, example, ablations=5, keep=0.5, rng=np.random.default_rng(3))
    assert sample is not None and len(sample.y) >= 1 and not sample.kept.all(1).any()
    answer = encode_answer(bert_tokenizer, example.answer)
    features, full = direct(eager, bert_tokenizer, example.question, list(example.chunks), answer)
    np.testing.assert_allclose(sample.features, features, atol=1e-5)
    assert sample.logprob == pytest.approx(full, abs=1e-4)
    for a in range(len(sample.y)):
        kept = sample.kept[a]
        np.testing.assert_allclose(sample.x[a], features[~kept].sum(0).ravel(), atol=1e-5)
        chunks = [c for c, k in zip(example.chunks, kept, strict=True) if k]
        reduced = direct(eager, bert_tokenizer, example.question, chunks, answer)[1]
        assert sample.y[a] == pytest.approx(full - reduced, abs=1e-4)


def test_predictions_are_weights_times_features_and_rag_uses_them(models, calibration, bert_tokenizer):
    fast, eager = models
    w = calibration.weights
    assert w.shape == (2, 4) and (w >= 0).all() and w.sum() > 0
    example = EXAMPLES[0]
    answer = encode_answer(bert_tokenizer, example["answer"])
    features, _ = direct(eager, bert_tokenizer, example["question"], example["chunks"], answer)
    expected = (features * w).sum(axis=(1, 2))
    np.testing.assert_allclose(calibration.predict(features), expected, rtol=1e-10)
    report = rag(
        fast, example["question"], example["chunks"], answer=example["answer"], calibration=calibration
    )
    np.testing.assert_allclose(report.learned_attention, expected, rtol=1e-4, atol=1e-7)
    meta = calibration.meta
    assert meta["settings"]["units"] == "rag chunks" and meta["train"]["examples"] == 3
    assert meta["settings"]["target"] == "the answer's summed log-probability"
    assert set(meta["heldout"]) >= {"r2", "spearman", "top1"} and meta["heldout"]["examples"] == 1


def test_the_file_round_trips_and_another_model_is_refused(models, calibration, bert_tokenizer, tmp_path):
    fast = models[0]
    path = calibration.save(tmp_path / "rag.safetensors")
    back = headmap.load_calibration(path, fast)
    np.testing.assert_allclose(back.weights, calibration.weights, rtol=1e-6)
    assert back.meta == calibration.meta and back.meta["model_hash"] == model_hash(fast)
    example = EXAMPLES[1]
    report = rag(fast, example["question"], example["chunks"], answer=example["answer"], calibration=path)
    assert report.learned_attention is not None
    other = build("gpt2", bert_tokenizer)[0]
    with pytest.raises(HeadmapError, match="calibration is for model"):
        headmap.load_calibration(path, other)
    with pytest.raises(HeadmapError, match="headmap calibrate"):
        rag(other, example["question"], example["chunks"], answer=example["answer"], calibration=path)


def test_examples_are_checked(models):
    with pytest.raises(HeadmapError, match='example 2: "answer" must be a non-empty string'):
        calibrate_rag(models[0], [EXAMPLES[0], {"question": "q?", "chunks": ["a", "b"]}])
    with pytest.raises(HeadmapError, match="two or more chunks"):
        calibrate_rag(models[0], [{"question": "q?", "chunks": ["a"], "answer": "a"}], holdout=0.0)


def test_cli_calibrate_rag_then_rag(models, tmp_path, capsys):
    folder = tmp_path / "tiny"
    models[0].model.save_pretrained(folder)
    models[0].tokenizer.save_pretrained(folder)
    corpus = tmp_path / "examples.jsonl"
    corpus.write_text("\n".join(json.dumps(e) for e in EXAMPLES[:3]) + "\n")
    out = tmp_path / "w.safetensors"
    argv = ["calibrate", "--rag", "--model", str(folder), "--corpus", str(corpus), "-o", str(out)]
    assert main([*argv, "--masks", "4", "--holdout", "0.3"]) == 0
    assert "held-out" in capsys.readouterr().out
    cal = headmap.load_calibration(out)
    assert cal.meta["settings"]["ablations"] == 4 and cal.meta["settings"]["units"] == "rag chunks"
    chunks = tmp_path / "chunks.jsonl"
    chunks.write_text("\n".join(json.dumps({"text": c}) for c in EXAMPLES[0]["chunks"]) + "\n")
    rag_argv = ["rag", "--model", str(folder), "--question", EXAMPLES[0]["question"], "--chunks", str(chunks)]
    assert main([*rag_argv, "--answer", "the library", "--calibration", str(out)]) == 0


def test_cli_a_bad_line_names_the_line_and_the_fix(tmp_path, capsys):
    corpus = tmp_path / "examples.jsonl"
    corpus.write_text(json.dumps(EXAMPLES[0]) + "\n" + json.dumps({"question": "q?", "chunks": ["a"]}) + "\n")
    argv = [
        "calibrate",
        "--rag",
        "--model",
        "no-such-model",
        "--corpus",
        str(corpus),
        "-o",
        str(tmp_path / "w.safetensors"),
    ]
    assert main(argv) == 1  # refused before the model loads
    err = capsys.readouterr().err
    assert (
        "examples.jsonl line 2" in err
        and '"answer" must be a non-empty string' in err
        and '"chunks": [' in err
    )
    corpus.write_text("{not json\n")
    assert main(argv) == 1 and "line 1 is not JSON" in capsys.readouterr().err
