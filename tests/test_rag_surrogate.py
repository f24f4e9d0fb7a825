"""The ContextCite-style surrogate for RAG chunks: its ablations, fit and agreement, checked directly."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_models import build

from headmap.apps.rag.causal import answer_token_logprobs, spearman
from headmap.apps.rag.prompt import build_prompt
from headmap.apps.rag.surrogate import ablation_masks, agreement, fit, surrogate
from headmap.errors import HeadmapError

CHUNKS = [
    "the old maps are kept in the library.",
    "the garage has space for two cars.",
    "bread is baked at dawn.",
]


def test_the_fit_recovers_a_linear_effect():
    masks = ablation_masks(6, 64, seed=1)
    truth = np.array([3.0, 0.0, 0.0, 1.5, 0.0, 0.0])
    scores, intercept, r2 = fit(masks, -10.0 + masks @ truth, alpha=1e-4)
    np.testing.assert_allclose(scores, truth, atol=0.01)
    assert intercept == pytest.approx(-10.0, abs=0.01) and r2 > 0.999


def test_masks_are_seeded_halves():
    a, b = ablation_masks(5, 200, seed=3), ablation_masks(5, 200, seed=3)
    assert np.array_equal(a, b) and set(np.unique(a)) == {0.0, 1.0}
    assert 0.4 < a.mean() < 0.6
    with pytest.raises(HeadmapError, match="at least 2"):
        ablation_masks(5, 1, seed=0)


def test_each_ablation_is_a_direct_forward_and_scores_predict(bert_tokenizer):
    model = build("llama", bert_tokenizer)[0]
    answer = bert_tokenizer("the library", add_special_tokens=False)["input_ids"]
    found = surrogate(model, "which room holds the old maps?", CHUNKS, answer, k=6, seed=2)
    for a in (0, 3):
        kept = [c for c, keep in zip(CHUNKS, found.masks[a], strict=True) if keep]
        prompt = build_prompt(bert_tokenizer, "which room holds the old maps?", kept)
        assert found.logprobs[a] == pytest.approx(
            answer_token_logprobs(model, prompt.ids, answer).sum(), abs=1e-9
        )
    np.testing.assert_allclose(found.predict(found.masks), found.intercept + found.masks @ found.scores)
    assert found.seconds > 0


def test_agreement_with_leave_one_out():
    drops = np.array([2.0, 0.1, 0.5, -0.2])
    same = agreement(np.array([9.0, 1.0, 3.0, 0.0]), drops)
    assert same.spearman == pytest.approx(1.0) and same.top1
    other = agreement(np.array([0.0, 5.0, 1.0, 2.0]), drops)
    assert other.spearman == pytest.approx(spearman(np.array([0.0, 5.0, 1.0, 2.0]), drops)) and not other.top1


def test_rag_reports_the_surrogate_beside_leave_one_out(bert_tokenizer, tmp_path):
    from headmap.apps.rag import rag

    model = build("llama", bert_tokenizer)[0]
    report = rag(model, "which room holds the old maps?", CHUNKS, answer="the library", surrogate=8, seed=4)
    assert report.surrogate is not None and report.surrogate.masks.shape == (8, 3)
    costs = report.costs.set_index("method")
    assert (
        costs.loc["surrogate (8 ablations)", "forwards"] == 8 and costs.loc["leave-one-out", "forwards"] == 3
    )
    expected = agreement(report.surrogate.scores, report.logprob_drop)
    assert costs.loc["surrogate (8 ablations)", "spearman"] == pytest.approx(expected.spearman, nan_ok=True)
    data = report.to_dict()
    assert data["surrogate"]["ablations"] == 8 and len(data["agreement_with_leave_one_out"]) == 4
    assert "Spearman with leave-one-out" in report.save(tmp_path / "r.html").read_text()
    assert "surrogate_score" in report.table
    assert rag(model, "which room holds the old maps?", CHUNKS, answer="the library").surrogate is None


def test_rag_weights_heads_with_a_calibration(bert_tokenizer):
    from headmap.apps.rag import rag
    from headmap.attribution.calibrated import Calibration, model_hash

    model = build("llama", bert_tokenizer)[0]
    weights = np.arange(8, dtype=np.float64).reshape(2, 4) / 10
    calibration = Calibration(weights, {"model_hash": model_hash(model), "model": model.name})
    report = rag(
        model, "which room holds the old maps?", CHUNKS, answer="the library", calibration=calibration
    )
    expected = (report.mass.astype(np.float64) * weights[:, :, None, None]).sum(axis=(0, 1, 2))
    np.testing.assert_allclose(report.learned_attention, expected)
    assert "learned head weights (AT2)" in set(report.costs.method)
    with pytest.raises(HeadmapError, match="leave --layers"):
        rag(model, "which room?", CHUNKS, answer="the library", layers=[0], calibration=calibration)
