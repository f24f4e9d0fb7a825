"""Head pruning on tiny random models: the cut model equals the gated one, counts, orders, quality."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from tiny_models import build

import headmap
from headmap.apps.prune import prune, prune_heads, read_record
from headmap.apps.prune.order import (
    _keep_one,
    all_heads,
    entropy_scores,
    importance_order,
    random_order,
    step_counts,
)
from headmap.apps.prune.physical import layouts_for, max_difference, parameter_count, plan_layout
from headmap.apps.prune.pruning import mean_random
from headmap.apps.prune.quality import PERPLEXITY, embedding_quality, embeddings, perplexity, retrieval_loss
from headmap.apps.prune.report import read_report
from headmap.errors import HeadmapError
from headmap.models.pruned import HeadLayout
from headmap.result import LayerKey, Stack

TEXTS = [
    "The trophy didn't fit in the suitcase because it was too big.",
    "A heavy fog delayed every flight at the airport until noon.",
    "She planted tomatoes along the fence.",
    "The committee postponed the vote until the spring meeting.",
    "Rain again.",
    "The old bridge was closed for repairs after the storm damaged its supports.",
]
HELD = [
    "The carpenter measured the door frame twice before cutting the wood.",
    "The young chess player surprised everyone by beating the champion.",
    "Fresh bread sells out early on Saturdays.",
    "The museum extended its opening hours for the summer exhibition.",
]
L0, L1 = LayerKey(Stack.SELF, 0), LayerKey(Stack.SELF, 1)
#: Tiny Llama has 4 query heads on 2 KV heads (groups {0, 1}, {2, 3}): layer 0 loses every query
#: head of KV group 0, layer 1 one head of group 1 (groups of 2 and 1 remain).
GQA_CUT = {L0: [0, 1], L1: [3]}
BERT_CUT = {L0: [1], L1: [0, 2, 3]}


@pytest.fixture(scope="module")
def tiny(bert_tokenizer):
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = build(name, bert_tokenizer)[0]
        return cache[name]

    return get


def _double(loaded):
    return headmap.LoadedModel(copy.deepcopy(loaded.model).double(), loaded.tokenizer, loaded.name)


def test_plan_layout_drops_a_kv_head_only_with_all_its_query_heads():
    full = HeadLayout((0, 1, 2, 3, 4, 5, 6, 7, 8), (0, 1, 2))  # SmolLM2: 9 query heads on 3 KV heads
    cut = plan_layout(full, [0, 1, 2, 4], 3)
    assert cut.query == (3, 5, 6, 7, 8) and cut.kv == (1, 2)
    assert cut.slots == (0, 0, 1, 1, 1) and cut.groups == 1  # groups of 2 and 3: gcd 1
    even = plan_layout(full, [0, 3, 6], 3)
    assert even == HeadLayout((1, 2, 4, 5, 7, 8), (0, 1, 2)) and even.groups == 2
    four = plan_layout(HeadLayout(tuple(range(8)), (0, 1)), [0, 1], 4)  # groups of 2 and 4: gcd 2
    assert four.slots == (0, 1, 1) and four.groups == 2
    assert plan_layout(HeadLayout((0, 1, 2), (0, 1, 2)), [1], 1) == HeadLayout((0, 2), (0, 2))


@pytest.mark.parametrize(
    "name,heads",
    [("llama", GQA_CUT), ("qwen2", GQA_CUT), ("mistral", {L0: [2, 3], L1: [0]}), ("bert", BERT_CUT)],
)
def test_cut_model_equals_gated_model(tiny, name, heads):
    loaded = tiny(name)
    cut = prune_heads(loaded, heads)
    assert cut.model is not loaded.model and parameter_count(cut.model) < parameter_count(loaded.model)
    # float64: the maths is the same to the last bit of double precision.
    exact, scale = max_difference(_double(loaded), prune_heads(_double(loaded), heads), heads, TEXTS)
    assert exact <= 1e-10 * scale
    # float32: only the order of the sums differs (the output projection has fewer columns).
    difference, scale32 = max_difference(loaded, cut, heads, TEXTS)
    assert difference <= 1e-5 * max(1.0, scale32)


def test_parameter_count_falls_by_exactly_the_cut_rows_and_columns(tiny):
    llama = tiny("llama")
    hidden, dim = 32, 8
    cut = prune_heads(llama, GQA_CUT)
    query_heads, kv_heads = 3, 1  # KV head 0 of layer 0 goes; layer 1 keeps both KV heads
    assert parameter_count(llama.model) - parameter_count(cut.model) == (
        query_heads * 2 * hidden * dim + kv_heads * 2 * hidden * dim
    )
    bert = tiny("bert")
    cut = prune_heads(bert, BERT_CUT)
    heads = 4  # rows of query, key, value (with their biases) and columns of the output dense
    assert parameter_count(bert.model) - parameter_count(cut.model) == heads * (4 * hidden * dim + 3 * dim)


def test_saved_folder_loads_runs_and_captures(tiny, tmp_path):
    from headmap.apps.prune.save import save_pruned
    from headmap.cli import main

    llama = tiny("llama")
    cut = prune_heads(llama, GQA_CUT)
    folder = save_pruned(cut, tmp_path / "cut", {"removed": {"layer.0": [0, 1], "layer.1": [3]}})
    assert read_record(folder)["removed"] == {"layer.0": [0, 1], "layer.1": [3]}
    assert not list(folder.glob("*.bin")) and (folder / "model.safetensors").is_file()
    again = headmap.load(str(folder))
    ids = llama.tokenizer(TEXTS[0], return_tensors="pt")
    with torch.inference_mode():
        torch.testing.assert_close(again.model(**ids).logits, cut.model(**ids).logits, rtol=0, atol=0)
    assert main(["capture", TEXTS[0], "--model", str(folder), "-o", str(tmp_path / "run.safetensors")]) == 0
    result = headmap.load_result(tmp_path / "run.safetensors")
    assert [len(layer.heads) for layer in result.layers] == [2, 3]
    with pytest.raises(HeadmapError, match="not an empty folder"):
        save_pruned(cut, folder, {})


def test_step_counts_and_the_one_head_per_layer_rule():
    assert step_counts(72, 6) == [0, 7, 14, 22, 29, 36, 43, 50, 58, 65]
    assert step_counts(270, 30)[-1] == 216  # 243 (90%) would leave a layer empty
    assert step_counts(270, 30, amount=0.35) == [0, 27, 54, 81, 94]
    with pytest.raises(HeadmapError, match="at most 240"):
        step_counts(270, 30, amount=0.9)
    per_layer = {L0: 3, L1: 3}
    ranked = [(L0, 0), (L0, 1), (L0, 2), (L1, 2), (L1, 1)]
    assert _keep_one(ranked, per_layer) == [(L0, 0), (L0, 1), (L1, 2), (L1, 1)]
    order = random_order(per_layer, seed=4)
    assert order == random_order(per_layer, seed=4) and len(order.heads) == 4
    assert {k for k, _ in all_heads(per_layer)} - {k for k, _ in order.heads} == set()


def test_entropy_scores_equal_the_mean_over_rows_of_the_captured_maps(tiny):
    bert = tiny("bert")
    keys = [L0, L1]
    scores = entropy_scores(bert, TEXTS, keys, batch_size=4)
    sums, rows = np.zeros((2, 4)), 0
    for text in TEXTS:
        result = headmap.capture(bert, text)
        n = len(result.source)
        for li in range(2):
            w = result.layers[li].weights.astype(np.float64)  # [head, row, key]
            sums[li] += (-(w * np.log(np.where(w > 0, w, 1))).sum(-1) / math.log(n)).sum(-1)
        rows += n
    np.testing.assert_allclose(scores, sums / rows, rtol=1e-5)


def test_importance_order_recomputes_importance_with_removed_heads_gated(tiny):
    llama = tiny("llama")
    per_layer = {L0: 4, L1: 4}
    order = importance_order(llama, TEXTS, [0, 2, 4], [L0, L1], per_layer)
    first = headmap.head_importance(llama, TEXTS).normalized
    ranked = sorted(all_heads(per_layer), key=lambda h: (first[h[0].index, h[1]], h[0].index, h[1]))
    assert list(order.heads[:2]) == ranked[:2]
    with headmap.ablate(llama, list(order.heads[:2])):
        second = headmap.head_importance(llama, TEXTS).normalized
    np.testing.assert_allclose(order.scores[1], second, rtol=1e-6)
    left = [h for h in all_heads(per_layer) if h not in order.heads[:2]]
    assert (
        list(order.heads[2:]) == sorted(left, key=lambda h: (second[h[0].index, h[1]], h[0].index, h[1]))[:2]
    )


def test_perplexity_equals_a_direct_teacher_forced_computation(tiny):
    llama = tiny("llama")
    total, count = 0.0, 0
    with torch.inference_mode():
        for text in HELD:
            ids = llama.tokenizer(text, return_tensors="pt")["input_ids"]
            logits = llama.model(input_ids=ids).logits[0].double()
            total += float(torch.nn.functional.cross_entropy(logits[:-1], ids[0, 1:], reduction="sum"))
            count += ids.shape[1] - 1
    assert perplexity(llama, HELD, batch_size=3) == pytest.approx(math.exp(total / count), rel=1e-5)


def test_embedding_quality_equals_numpy_and_scipy(tiny):
    from scipy.stats import spearmanr

    bert = tiny("bert")
    pooled = embeddings(bert, HELD, batch_size=3).numpy()
    with torch.inference_mode():
        for i, text in enumerate(HELD):
            hidden = bert.model(**bert.tokenizer(text, return_tensors="pt")).last_hidden_state[0].double()
            np.testing.assert_allclose(pooled[i], hidden.mean(0).numpy(), atol=1e-5)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    iu = np.triu_indices(6, 1)
    got = embedding_quality(torch.tensor(a), torch.tensor(b))
    assert got["mean_cosine"] == pytest.approx(float((unit(a) * unit(b)).sum(1).mean()), abs=1e-12)
    want = spearmanr((unit(a) @ unit(a).T)[iu], (unit(b) @ unit(b).T)[iu]).statistic
    assert got["spearman"] == pytest.approx(float(want), abs=1e-12)


def test_retrieval_loss_is_the_stated_cross_entropy_and_has_a_gradient(tiny):
    bert = tiny("bert")
    loss = retrieval_loss(bert, TEXTS)
    ids = bert.tokenizer(TEXTS[:2], return_tensors="pt", padding=True)
    with torch.inference_mode():
        values = loss.compute(bert.model(**ids), dict(ids))
    reference = embeddings(bert, TEXTS).float()
    unit = torch.nn.functional.normalize(reference, dim=-1)
    expected = torch.nn.functional.cross_entropy(
        20 * unit[:2] @ unit.T, torch.tensor([0, 1]), reduction="none"
    )
    torch.testing.assert_close(values, expected, atol=1e-5, rtol=1e-5)
    importance = headmap.head_importance(bert, TEXTS, loss=loss)
    assert (importance.raw > 0).all()


def test_prune_report_holds_what_it_measured(tiny, tmp_path):
    from headmap.apps.prune.curve import measure_step
    from headmap.apps.prune.quality import Quality

    llama = tiny("llama")
    report = prune(
        llama,
        TEXTS,
        heldout=HELD,
        curve=True,
        amount=0.25,
        seeds=(0, 1),
        step=0.25,
        out=tmp_path / "cut",
        latency_repeats=2,
    )
    table = report.table
    assert (
        set(table["order"]) == {"importance", "entropy", "random"} and len(table) == 4 * 4
    )  # 4 orders x steps of 0, 2, 4, 6 heads
    quality = Quality(llama, HELD)
    for curve in report.curves:
        assert curve.values["perplexity"][1] == pytest.approx(
            measure_step(quality, curve.order, curve.counts[1])["perplexity"], rel=1e-9
        )
    p = report.pruning
    assert p.removed == tuple((k.name, h) for k, h in report.curves[0].order.heads[:2])
    assert p.quality["perplexity"] == pytest.approx(report.curves[0].values["perplexity"][1], rel=1e-5)
    assert p.parameters_after == parameter_count(headmap.load(str(tmp_path / "cut")).model)
    assert len(p.latency.before) == len(p.latency.after) == 2
    saved = read_record(tmp_path / "cut")
    assert saved["pruning"]["removed"] == {
        name: [h for n, h in p.removed if n == name] for name, _ in p.removed
    }
    data = json.loads(report.save(tmp_path / "r.json").read_text())
    assert data["curves"][0]["values"]["perplexity"] == list(report.curves[0].values["perplexity"])
    again = read_report(tmp_path / "r.json")
    assert again.summary == report.summary and again.table.equals(report.table)
    assert again.curves[0].order.heads == report.curves[0].order.heads
    report.save(tmp_path / "r.png")
    with pytest.warns(DeprecationWarning, match="use save"):
        report.render(tmp_path / "old.png")
    with pytest.warns(DeprecationWarning, match="use figure"):
        report.plot_curve()
    counts, geometric = mean_random(report, PERPLEXITY)
    seeds = np.array([c.values["perplexity"] for c in report.curves if c.order.name == "random"])
    np.testing.assert_allclose(geometric, np.exp(np.log(seeds).mean(0)), rtol=1e-12)
    evil = headmap.LoadedModel(llama.model, llama.tokenizer, "<script>alert(1)</script>")
    page = prune(evil, TEXTS, heldout=HELD, amount=0.25, step=0.25, latency_repeats=0)._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_prune_refuses_bad_requests(tiny, bert_tokenizer, tmp_path):
    llama = tiny("llama")
    with pytest.raises(HeadmapError, match="nothing to do"):
        prune(llama, TEXTS, heldout=HELD)
    with pytest.raises(HeadmapError, match="would empty a layer"):
        prune(llama, TEXTS, heldout=HELD, amount=0.9)
    with pytest.raises(HeadmapError, match="needs the amount"):
        prune(llama, TEXTS, heldout=HELD, curve=True, out=tmp_path / "x")
    gpt2 = build("gpt2", bert_tokenizer)[0]
    with pytest.raises(HeadmapError, match=r"GPT2LMHeadModel \(gpt2\)"):
        prune(gpt2, TEXTS, heldout=HELD, amount=0.25)
    with pytest.raises(HeadmapError, match="already pruned"):
        prune(prune_heads(llama, GQA_CUT), TEXTS, heldout=HELD, curve=True)
    assert layouts_for(llama.model, {})[0] == HeadLayout((0, 1, 2, 3), (0, 1))
    with pytest.raises(HeadmapError, match="every head of layer.1"):
        prune_heads(llama, [(1, 0), (1, 1), (1, 2), (1, 3)])
    with pytest.raises(HeadmapError, match="cannot remove head 4"):
        prune_heads(llama, {L0: [4]})


def test_ctrl_c_keeps_the_orders_already_measured(tiny, monkeypatch):
    from headmap.apps.prune import run

    real, calls = run.measure_curve, []

    def interrupt_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(run, "measure_curve", interrupt_second)
    report = prune(tiny("llama"), TEXTS, heldout=HELD, curve=True, amount=0.25, step=0.25, latency_repeats=0)
    assert report.interrupted and report.pruning is None
    assert [c.order.name for c in report.curves] == ["importance"] and "Interrupted" in report.notes[0]


def test_summary_claims_only_the_steps_measured(tiny, tmp_path):
    llama = tiny("llama")
    one = prune(llama, TEXTS, heldout=HELD, amount=0.25, step=0.25, latency_repeats=0)
    assert one.curves[0].counts == (0, 2)  # only the cut's own step was measured
    base, after = one.baseline["perplexity"], one.curves[0].values["perplexity"][1]
    line = one.summary[1]
    assert line.startswith("At the one step measured (25% of heads removed)")
    assert f"importance {base / after:.0%}" in line and "within 90%" not in line.split(".")[0]
    assert "Largest share" not in " ".join(one.summary)
    for page in (one._repr_html_(), one.save(tmp_path / "one.html").read_text()):
        assert "At the one step measured" in page and "Largest share" not in page
    assert one.to_dict()["largest_share_measured"] == {"importance": 0.25}
    curve = prune(llama, TEXTS, heldout=HELD, curve=True, seeds=(0,), step=0.25, latency_repeats=0)
    assert (
        "within 90% of the unpruned value, over the steps measured (up to 75% of heads)" in curve.summary[1]
    )
