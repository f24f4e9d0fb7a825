"""Calibrated attention (AT2-style): features, the non-negative fit, the weights file, the method."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from tiny_models import build

import headmap
from headmap.attribution.calibrate import ablation_units, fit_weights, sample_text
from headmap.attribution.calibrated import Calibrated, Calibration, model_hash, token_features, unit_features
from headmap.attribution.explain import problem_for
from headmap.cli import main
from headmap.errors import HeadmapError

TEXTS = [
    "The cat sat on the mat and looked at the dog.",
    "A quick brown fox jumps over the lazy dog today.",
    "Paris is the capital of France and a big city.",
    "She gave him the book because he asked for it.",
    "Rain fell all night, so the river rose by morning.",
]


@pytest.fixture(scope="module")
def llama(bert_tokenizer):
    return build("llama", bert_tokenizer)[0]


@pytest.fixture(scope="module")
def calibration(llama):
    return headmap.calibrate(llama, TEXTS, masks=12, seed=1)


def test_features_are_the_explained_rows_of_the_full_maps(llama):
    problem = problem_for(llama, TEXTS[0])
    features = token_features(problem)  # streamed: the explained row only
    full = headmap.capture(llama, TEXTS[0])  # every row
    assert features.shape == (problem.n, len(full.layers), len(full.layers[0].heads))
    for li, layer in enumerate(full.layers):
        row = layer.weights[:, problem.position, :]  # [head, key]
        np.testing.assert_allclose(features[:, li, :], row.T, atol=1e-5)


def test_a_prediction_is_the_weights_times_the_features(llama, calibration):
    problem = problem_for(llama, TEXTS[1])
    scores = Calibrated(calibration).attribute(problem).tokens
    full = headmap.capture(llama, TEXTS[1], rows=[problem.position])
    expected = np.zeros(problem.n)
    for li, layer in enumerate(full.layers):
        for hi in range(len(layer.heads)):
            expected += calibration.weights[li, hi] * layer.weights[hi, 0, :]
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    units = problem.groups
    np.testing.assert_allclose(
        calibration.predict(unit_features(token_features(problem), units)),
        [scores[list(u)].sum() for u in units],
        rtol=1e-5,
        atol=1e-6,
    )


def test_the_fit_recovers_known_nonnegative_weights():
    rng = np.random.default_rng(0)
    w = np.array([0.0, 2.0, 0.5, 0.0, 1.5, 0.0])
    x = rng.random((400, w.size))
    y = x @ w + rng.normal(0, 1e-3, 400)
    np.testing.assert_allclose(fit_weights(x, y), w, atol=1e-2)
    lasso = fit_weights(x, y, alpha=1e-4)
    assert (lasso >= 0).all() and np.abs(lasso - w).max() < 0.05
    # a weight the data would make negative is held at zero
    assert fit_weights(x, x @ np.array([1.0, -1.0, 0, 0, 0, 0]))[1] == 0.0


def test_ablations_regress_on_the_sum_of_the_ablated_units(llama):
    problem = problem_for(llama, TEXTS[2])
    units = ablation_units(problem)
    assert all(problem.position not in u and not any(problem.tokens.special[i] for i in u) for u in units)
    sample = sample_text(problem, units, masks=6, keep=0.5, rng=np.random.default_rng(0))
    assert (
        sample is not None and sample.x.shape[1] == sample.units.shape[1] and len(sample.y) == len(sample.x)
    )
    assert np.isfinite(sample.y).all()


def test_save_load_round_trip_and_a_mismatching_model_is_refused(
    llama, calibration, bert_tokenizer, tmp_path
):
    path = calibration.save(tmp_path / "w.safetensors")
    back = headmap.load_calibration(path, llama)
    np.testing.assert_allclose(back.weights, calibration.weights, rtol=1e-6)
    assert back.meta == calibration.meta
    assert back.meta["model_hash"] == model_hash(llama)
    for key in ("corpus_hash", "settings", "heldout", "headmap", "model"):
        assert key in back.meta
    assert set(back.meta["heldout"]) >= {"r2", "spearman", "top1"}
    other = build("gpt2", bert_tokenizer)[0]
    with pytest.raises(HeadmapError, match="headmap calibrate"):
        headmap.load_calibration(path, other)
    with pytest.raises(HeadmapError, match="calibration is for model"):
        headmap.explain(other, TEXTS[0], methods="calibrated", calibration=path)
    (tmp_path / "bad.safetensors").write_bytes(b"nonsense")
    with pytest.raises(HeadmapError, match="cannot read calibration"):
        headmap.load_calibration(tmp_path / "bad.safetensors")


def test_explain_calibrated_end_to_end(llama, calibration, tmp_path):
    path = calibration.save(tmp_path / "w.safetensors")
    ex = headmap.explain(llama, TEXTS[3], methods="calibrated,occlusion", calibration=path)
    assert ex.methods == ["calibrated", "occlusion"] if isinstance(ex.methods, list) else True
    words = ex.to_words()
    assert np.isfinite(words.word_scores["calibrated"]).all() and (words.word_scores["calibrated"] >= 0).all()
    assert ex.info["calibrated"]["calibration"]["model"] == "tiny-llama"
    with pytest.raises(HeadmapError, match="needs a calibration"):
        headmap.explain(llama, TEXTS[3], methods="calibrated")
    # by default calibrated runs only when a calibration is given
    assert "calibrated" not in headmap.explain(llama, TEXTS[3], methods=None, n_steps=4, max_steps=8).methods


def test_calibration_object_is_accepted(llama, calibration):
    assert isinstance(calibration, Calibration)
    ex = headmap.explain(llama, TEXTS[4], methods="calibrated", calibration=calibration)
    assert list(ex.word_scores) == ["calibrated"]


def test_cli_calibrate_then_explain(llama, tmp_path, capsys):
    folder = tmp_path / "tiny"
    llama.model.save_pretrained(folder)
    llama.tokenizer.save_pretrained(folder)
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(TEXTS[:3]) + "\n")
    out = tmp_path / "w.safetensors"
    argv = ["calibrate", "--model", str(folder), "--corpus", str(corpus), "--out", str(out), "--masks", "4"]
    assert main(argv) == 0
    assert out.exists() and "held-out" in capsys.readouterr().out
    cal = headmap.load_calibration(out)
    assert cal.weights.shape == (2, 4) and (cal.weights >= 0).all()
    argv = ["explain", TEXTS[0], "--model", str(folder), "--methods", "calibrated", "--calibration", str(out)]
    assert main(argv) == 0
    assert "calibrated" in capsys.readouterr().out
    assert main(["explain", TEXTS[0], "--model", str(folder), "--methods", "calibrated"]) == 1
    assert "needs a calibration" in capsys.readouterr().err
    assert main(["calibrate", "--corpus", str(corpus), "--out", str(tmp_path / "w.bin")]) == 1


@pytest.mark.slow
def test_smollm2_calibrates_on_a_handful_of_texts(smollm2, tmp_path):
    cal = headmap.calibrate(smollm2, TEXTS, masks=8, seed=0)
    assert cal.weights.shape == (30, 9) and (cal.weights >= 0).all() and cal.weights.sum() > 0
    held = cal.meta["heldout"]
    assert held["texts"] == 1 and np.isfinite(held["r2"])
    ex = headmap.explain(
        smollm2, TEXTS[0], methods="calibrated,occlusion", calibration=cal.save(tmp_path / "s.safetensors")
    )
    assert np.isfinite(ex.to_words().word_scores["calibrated"]).all()


def test_custom_units_such_as_chunks(llama):
    def halves(problem):
        inner = [i for i in range(problem.n) if not problem.tokens.special[i] and i != problem.position]
        return [inner[: len(inner) // 2], inner[len(inner) // 2 :]]

    cal = headmap.calibrate(llama, TEXTS[:3], masks=4, holdout=0.0, units=halves)
    assert cal.meta["settings"]["units"] == "halves" and cal.meta["heldout"] == {}
    assert cal.meta["train"]["texts"] == 3


def test_an_encoder_without_lm_head_needs_a_compare_text(minilm):
    with pytest.raises(HeadmapError, match="compare"):
        headmap.calibrate(minilm, TEXTS[:2], masks=2)
    with pytest.raises(HeadmapError, match="one per text"):
        headmap.calibrate(minilm, TEXTS[:3], masks=2, compare=TEXTS[:2])


def test_minilm_calibrates_on_its_own_embedding_and_predicts_weights_times_pooled_rows(minilm):
    cal = headmap.calibrate(minilm, TEXTS, masks=8, seed=0, compare=TEXTS)
    assert cal.weights.shape == (6, 12) and cal.weights.sum() > 0
    assert cal.meta["settings"]["target_kind"] == "cosine"
    assert cal.meta["settings"]["compare"] == "one per text"
    problem = problem_for(minilm, TEXTS[0], compare=TEXTS[0])
    scores = Calibrated(cal).attribute(problem).tokens
    full = headmap.capture(minilm, TEXTS[0])  # a pooled output reads the mean of every row
    expected = np.zeros(problem.n)
    for li, layer in enumerate(full.layers):
        mean_rows = layer.weights.astype(np.float64).mean(1)  # [head, key]
        expected += (mean_rows * cal.weights[li][:, None]).sum(0)
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    # An explanation of another kind of output is refused, naming the fix.
    other = problem_for(minilm, TEXTS[0], compare="Something else entirely.")
    assert Calibrated(cal).attribute(other).tokens.shape == (problem.n,)  # still a cosine: accepted
    causal = Calibration(
        cal.weights, {**cal.meta, "settings": {**cal.meta["settings"], "target_kind": "next-token"}}
    )
    with pytest.raises(HeadmapError, match="learned on next-token outputs"):
        Calibrated(causal).attribute(problem)


def test_faithfulness_takes_one_compare_text_per_text(minilm):
    report = headmap.faithfulness(minilm, TEXTS[:2], "attention", compare=TEXTS[:2], n_boot=10)
    direct = [problem_for(minilm, t, compare=t).output() for t in TEXTS[:2]]
    got = [r["output"] for r in report.records]
    np.testing.assert_allclose(got, direct, atol=1e-9)
    assert direct[0] == pytest.approx(1.0, abs=1e-5)  # a text's cosine with itself


def test_cli_calibrate_compare_self(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(TEXTS[:3]) + "\n")
    out = tmp_path / "m.safetensors"
    argv = [
        "calibrate",
        "-m",
        "minilm",
        "--corpus",
        str(corpus),
        "-o",
        str(out),
        "--masks",
        "4",
        "--compare-self",
    ]
    assert main(argv) == 0
    assert headmap.load_calibration(out).meta["settings"]["target_kind"] == "cosine"
    capsys.readouterr()
    assert main(["calibrate", "-m", "minilm", "--corpus", str(corpus), "-o", str(out)]) == 1
    assert "--compare" in capsys.readouterr().err


def test_a_fit_where_attention_predicts_nothing_is_refused(llama, monkeypatch):
    # Every ablation raises the output (negative drops): no non-negative weight can predict that, the
    # fit is all zeros, and calibrated attention would silently score every word 0.
    monkeypatch.setattr(
        sys.modules["headmap.attribution.calibrate"],
        "occlusion_scores",
        lambda problem, removed, *a: -np.ones(len(removed)),
    )
    with pytest.raises(HeadmapError, match="every head's weight fit to 0"):
        headmap.calibrate(llama, TEXTS, masks=8, seed=0, holdout=0.0)
