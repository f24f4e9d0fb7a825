"""Faithfulness metrics against direct computations on a tiny random decoder."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from tiny_models import build

from headmap.attribution.base import Attribution
from headmap.attribution.explain import problem_for
from headmap.attribution.faithfulness import ERASER_BINS, GRID, bootstrap, count, make_units, measure, order
from headmap.attribution.faithfulness_report import FaithfulnessReport, faithfulness
from headmap.attribution.needle import needle_text
from headmap.attribution.occlusion import occlusion_scores

TEXT = "The trophy didn't fit in the suitcase because it was too big. It stayed home."


@pytest.fixture(scope="module")
def llama(bert_tokenizer):
    return build("llama", bert_tokenizer)[0]


@pytest.fixture(scope="module")
def case(llama):
    problem = problem_for(llama, TEXT)
    units = make_units(problem, "words")
    rng = np.random.default_rng(3)
    attribution = Attribution("fake", rng.normal(size=problem.n), signed=True)
    return problem, units, attribution, measure(problem, attribution, units, seed=1)


def direct(problem, removed):
    """F on the ids without ``removed``, run by hand: log p(target) at the last kept token."""
    ids = [t for i, t in enumerate(problem.ids) if i not in set(removed)]
    with torch.no_grad():
        logits = problem.loaded.model(input_ids=torch.tensor([ids])).logits[0, -1]
    return float(logits.double().log_softmax(-1)[problem.target.token_id])


def top(units, ranked, percent):
    return [i for u in ranked[: count(percent, len(units))] for i in units[u]]


def test_units_leave_special_tokens_out(case):
    problem, units, _, _ = case
    flat = [i for u in units for i in u]
    assert not any(problem.tokens.special[i] for i in flat)
    sentences = make_units(problem, "sentences")
    assert len(sentences) == 2 and sorted(i for u in sentences for i in u) == sorted(flat)


def test_deletion_and_insertion_points_are_direct_forwards(case):
    problem, units, attribution, f = case
    ranked = order(np.array([np.sum(attribution.tokens[list(u)]) for u in units]), True)
    everything = [i for u in units for i in u]
    for j, k in enumerate(GRID):
        removed = top(units, ranked, k)
        assert f.deletion[j] == pytest.approx(direct(problem, removed), abs=1e-4)
        kept = set(removed)
        assert f.insertion[j] == pytest.approx(
            direct(problem, [i for i in everything if i not in kept]), abs=1e-4
        )
    assert f.insertion[-1] == pytest.approx(problem.output(), abs=1e-6)
    assert f.deletion[0] == pytest.approx(problem.output(), abs=1e-6)


def test_aopc_comprehensiveness_sufficiency(case):
    problem, units, attribution, f = case
    fx = problem.output()
    ranked = order(f.scores, True)
    drops = [fx - direct(problem, top(units, ranked, k)) for k in GRID]
    assert f.aopc == pytest.approx(np.mean(drops), abs=1e-4)
    everything = [i for u in units for i in u]
    comp = np.mean([fx - direct(problem, top(units, ranked, b)) for b in ERASER_BINS])
    suff = np.mean(
        [
            fx - direct(problem, [i for i in everything if i not in set(top(units, ranked, b))])
            for b in ERASER_BINS
        ]
    )
    assert f.comprehensiveness == pytest.approx(comp, abs=1e-4)
    assert f.sufficiency == pytest.approx(suff, abs=1e-4)


def test_loo_agreement_is_spearman_with_occlusion(case):
    problem, units, _, f = case
    loo = occlusion_scores(problem, units, problem.output())
    assert f.loo_spearman == pytest.approx(spearmanr(f.scores, loo).statistic, abs=1e-9)


def test_unsigned_scores_rank_by_magnitude():
    assert list(order(np.array([0.1, -3.0, 2.0, np.nan]), signed=False)) == [1, 2, 0, 3]
    assert list(order(np.array([0.1, -3.0, 2.0, np.nan]), signed=True)) == [2, 0, 1, 3]


def test_bootstrap_contains_mean_and_is_seeded():
    values = np.random.default_rng(0).normal(size=40)
    mean, low, high = bootstrap(values, seed=5)
    assert low <= mean <= high and mean == pytest.approx(values.mean())
    assert bootstrap(values, seed=5) == (mean, low, high)
    assert bootstrap(values, seed=6) != (mean, low, high)


def test_mean_curve_leaves_the_empty_end_points_nan_without_a_warning():
    records = [
        {
            "method": "attention",
            "output": -1.0,
            "deletion": [-1.0, -2.0 - i, None],
            "insertion": [None, -3.0, -1.0],
        }
        for i in range(2)
    ]
    report = FaithfulnessReport(
        model="m", units="words", grid=(0.0, 50.0, 100.0), records=records, seed=0, n_boot=10
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "Mean of empty slice" showed under every figure
        deletion = report.mean_curve("attention", "deletion")
        insertion = report.mean_curve("attention", "insertion")
    np.testing.assert_allclose(deletion, [0.0, 1.5, np.nan])
    np.testing.assert_allclose(insertion, [np.nan, 2.0, 0.0])


def test_corpus_report_contract(llama, tmp_path):
    texts = [TEXT, "A <b>bold</b> & risky claim. Another one here."]
    report = faithfulness(llama, texts, methods="attention,occlusion", n_boot=200)
    assert len(report.records) == 4 and report.methods == ["attention", "occlusion"]
    data = report.to_dict()
    json.dumps(data, allow_nan=False)
    mean, low, high = data["summary"]["attention"]["aopc"]
    assert low <= mean <= high
    page = report.page()
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    for ext in ("json", "html", "png"):
        assert report.save(tmp_path / f"f.{ext}").exists()
    assert len(report.to_pandas()) == 4
    # An interrupted run: the finished texts are kept and not redone.
    again = faithfulness(
        llama,
        texts,
        methods="attention,occlusion",
        report=FaithfulnessReport(report.model, report.units, report.grid, records=report.records[:2]),
    )
    assert len(again.records) == 4 and again.records[2]["text_index"] == 1


@pytest.mark.parametrize("budget", [1000, 4000])
def test_needle_text_has_the_needle_at_the_budget(bert_tokenizer, budget):
    text, span = needle_text(bert_tokenizer, budget, depth=0.5, seed=0)
    n = len(bert_tokenizer(text)["input_ids"])
    assert abs(n - budget) <= 0.1 * budget
    assert "The secret code is 7421." in text[span[0] : span[1]]
    assert text.endswith("What is the secret code?")


@pytest.mark.slow
def test_real_model_occlusion_beats_random(smollm2):
    report = faithfulness(smollm2, [TEXT], methods="occlusion", n_boot=100)
    row = report.records[0]
    assert row["comprehensiveness"] > 0 and row["aopc"] >= row["random_aopc"] - 1e-6


def test_cli_mirrors_the_library_and_runs(tmp_path, capsys):
    from headmap.attribution.explain import METHODS
    from headmap.attribution.faithfulness_report import DEFAULT_METHODS
    from headmap.cli import faithfulness as cli
    from headmap.cli import main

    assert cli.METHODS == METHODS and cli.DEFAULT_METHODS == DEFAULT_METHODS
    corpus = tmp_path / "texts.txt"
    corpus.write_text(f"{TEXT}\nA second short sentence.\n", encoding="utf-8")
    out = tmp_path / "f.json"
    argv = [
        "faithfulness",
        str(corpus),
        "-m",
        "minilm",
        "-c",
        "A bag.",
        "--methods",
        "attention",
        "-o",
        str(out),
    ]
    assert main(argv) == 0
    assert "aopc" in capsys.readouterr().out and json.loads(out.read_text())["kind"] == "faithfulness"
    with pytest.raises(SystemExit):
        main(["faithfulness", str(corpus), "-m", "minilm", "--units", "lines"])
    assert main(["faithfulness", str(corpus), "-m", "minilm", "--methods", "nope"]) == 1
