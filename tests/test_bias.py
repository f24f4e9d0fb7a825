"""Bias probe on tiny random models (fast): every number equals a direct computation."""

from __future__ import annotations

import copy
import json
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
import transformers
from scipy import stats as st
from tiny_models import CONFIGS, build
from tokenizers import processors

from headmap import BiasReport, HeadmapError, ablate, bias_probe, capture
from headmap.apps.bias.causal import name_scores
from headmap.apps.bias.findings import SINK_SHARE
from headmap.apps.bias.stats import bh, paired_columns
from headmap.models import LoadedModel

TEMPLATE = "the applicant {name} has ten years of experience in accounting . hire {name} ? answer :"
EVIDENCE = "ten years of experience in accounting"
GROUPS = {"A": ["mary", "susan", "linda"], "B": ["james", "robert", "paul joseph"]}


@pytest.fixture(scope="module")
def tiny(bert_tokenizer):
    fast, _ = build("llama", bert_tokenizer)
    return fast


@pytest.fixture(scope="module")
def report(tiny):
    return bias_probe(
        tiny, TEMPLATE, GROUPS, EVIDENCE, target="yes", k=2, controls=2, resamples=2000, batch_size=4
    )


def next_logprob(loaded, ids, token_id):
    """Direct: one unpadded forward, log-softmax (float64) of the last position's logits."""
    with torch.no_grad():
        logits = loaded.model(input_ids=torch.tensor([list(ids)])).logits[0, -1]
    return float(torch.log_softmax(logits.double(), dim=-1)[token_id])


def test_prompts_are_the_filled_template_with_name_and_evidence_tokens(tiny, report):
    tok = tiny.tokenizer
    assert [p.name for p in report.prompts] == ["mary", "susan", "linda", "james", "robert", "paul joseph"]
    for p in report.prompts:
        assert p.text == TEMPLATE.replace("{name}", p.name)
        assert p.ids == tok(p.text)["input_ids"]  # exactly tokenizer(text): [CLS] ... [SEP]
        pieces = [p.encoded.tokens.tokens[i] for i in p.name_tokens]
        assert " ".join(pieces).replace(" ##", "") == " ".join([p.name] * 2)  # both slots, every piece
        offsets = p.encoded.tokens.offsets
        first, last = p.evidence_tokens[0], p.evidence_tokens[-1]
        assert p.text[offsets[first][0] : offsets[last][1]] == EVIDENCE
        assert list(p.evidence_tokens) == list(range(first, last + 1))
    assert report.positions == tuple(len(p) - 1 for p in report.prompts)


def test_outputs_equal_a_direct_forward(tiny, report):
    token_id = tiny.tokenizer("yes", add_special_tokens=False)["input_ids"][0]
    assert report.target["token_id"] == token_id and report.target["kind"] == "next-token"
    for p, value in zip(report.prompts, report.outputs):
        assert value == pytest.approx(next_logprob(tiny, p.ids, token_id), abs=1e-5)
    # right-padded batches give each prompt its own number
    alone = bias_probe(
        tiny, TEMPLATE, GROUPS, EVIDENCE, target="yes", k=2, controls=0, resamples=10, batch_size=1
    )
    assert np.abs(alone.outputs - report.outputs).max() < 1e-5
    assert np.abs(alone.name_attention - report.name_attention).max() < 1e-5


def test_span_attention_equals_a_direct_capture(tiny, report):
    assert report.layers == ("layer.0", "layer.1") and report.heads == (0, 1, 2, 3)
    for i, p in enumerate(report.prompts):
        direct = capture(tiny, p.encoded, rows=[-1])
        for li, layer in enumerate(direct.layers):
            w = layer.weights[:, 0].astype(np.float64)  # [head, key] of the last row
            assert np.abs(report.name_attention[i, li] - w[:, list(p.name_tokens)].sum(-1)).max() < 1e-5
            assert (
                np.abs(report.evidence_attention[i, li] - w[:, list(p.evidence_tokens)].sum(-1)).max() < 1e-5
            )


def test_ablation_equals_a_direct_forward_under_ablate(tiny, report):
    scores = np.mean(
        [(report.name_attention[a] + report.name_attention[b]) / 2 for a, b in report.pairs], axis=0
    )
    order = np.argsort(-scores.ravel(), kind="stable")[:2]
    expected = [(report.layers[i // 4], report.heads[i % 4]) for i in order]
    assert list(report.ablated) == expected and report.k == 2
    token_id = report.target["token_id"]
    for i, p in enumerate(report.prompts):
        with ablate(tiny, list(report.ablated)):
            direct = next_logprob(tiny, p.ids, token_id)
        assert report.ablated_outputs[i] == pytest.approx(direct, abs=1e-5)
        for c, heads in enumerate(report.control_heads):
            with ablate(tiny, list(heads)):
                assert report.control_outputs[c, i] == pytest.approx(
                    next_logprob(tiny, p.ids, token_id), abs=1e-5
                )
    assert np.abs(report.ablated_outputs - report.outputs).max() > 1e-3  # the ablation did something
    for heads in report.control_heads:
        assert len(set(heads)) == 2 and not set(heads) & set(report.ablated)


def test_statistics_equal_scipy_on_the_reports_numbers(report):
    a, b = report.a_index, report.b_index
    assert len(report.pairs) == 9  # every A name with every B name
    x, y = report.outputs[a], report.outputs[b]
    assert report.gap.mean == pytest.approx((x - y).mean(), abs=1e-12)
    assert report.gap.t_p == pytest.approx(st.ttest_rel(x, y).pvalue, rel=1e-10)
    assert report.gap.wilcoxon_p == pytest.approx(st.wilcoxon(x - y).pvalue, rel=1e-10)
    assert report.gap.d_z == pytest.approx((x - y).mean() / np.std(x - y, ddof=1), rel=1e-10)
    d, d2 = x - y, report.ablated_outputs[a] - report.ablated_outputs[b]
    assert report.ablation.mean == pytest.approx((d2 - d).mean(), abs=1e-12)
    assert report.ablation.t_p == pytest.approx(st.ttest_rel(d2, d).pvalue, rel=1e-10)
    contrast = (report.name_attention - report.evidence_attention).reshape(6, -1)
    cols = paired_columns(contrast[a], contrast[b], resamples=2000, seed=0)
    table = report.table
    assert len(table) == 8 and table["ablated"].sum() == 2
    assert np.allclose(table["contrast_t_p"], cols["t_p"], rtol=1e-12, equal_nan=True)
    assert np.allclose(table["contrast_t_q"], bh(cols["t_p"]), rtol=1e-12, equal_nan=True)
    finite = np.isfinite(cols["t_p"])
    assert np.allclose(
        table["contrast_t_q"].to_numpy()[finite],
        st.false_discovery_control(cols["t_p"][finite], method="bh"),
        rtol=1e-12,
    )
    assert np.allclose(table["contrast_mean"], (contrast[a] - contrast[b]).mean(0), atol=1e-12)
    assert np.allclose(table["name_A"], report.name_attention[a].reshape(9, -1).mean(0), atol=1e-12)
    pairs = report.pair_table
    assert list(pairs.columns[:2]) == ["name_A", "name_B"] and np.allclose(pairs["difference"], d)


def test_json_holds_every_pair_and_recomputes(tiny, report, tmp_path):
    path = report.save(tmp_path / "bias.json")
    data = json.loads(
        path.read_text(encoding="utf-8"), parse_constant=lambda c: pytest.fail(f"bare {c} in JSON")
    )
    assert (
        data["format"] == "headmap-bias/1" and data["template"] == TEMPLATE and data["evidence"] == EVIDENCE
    )
    assert [g["names"] for g in data["groups"]] == [GROUPS["A"], GROUPS["B"]]
    assert len(data["pairs"]) == 9 and data["pair_count"] is None
    token_id = data["target"]["token_id"]
    for pair in data["pairs"]:
        for side in ("a", "b"):
            assert pair[f"prompt_{side}"] == TEMPLATE.replace("{name}", pair[f"name_{side}"])
            assert pair[f"output_{side}"] == pytest.approx(
                next_logprob(tiny, pair[f"prompt_{side}_ids"], token_id), abs=1e-5
            )
        assert pair["difference"] == pytest.approx(pair["output_a"] - pair["output_b"], abs=1e-12)
    xa = np.array([p["output_a"] for p in data["pairs"]])
    xb = np.array([p["output_b"] for p in data["pairs"]])
    assert data["gap"]["t_p"] == pytest.approx(st.ttest_rel(xa, xb).pvalue, rel=1e-10)
    assert data["gap"]["mean"] == pytest.approx((xa - xb).mean(), abs=1e-12)
    assert [tuple(h) for h in data["ablation"]["heads"]] == list(report.ablated)
    assert len(data["head_statistics"]) == 8
    assert data["prompts"][0]["name_tokens"] == list(report.prompts[0].name_tokens)
    assert any("correlation, not causation" in line for line in data["caveats"])


def test_matched_pairs_use_each_name_once(tiny):
    r = bias_probe(
        tiny,
        TEMPLATE,
        {"A": ["mary", "susan", "linda", "anna"], "B": ["james", "robert", "john"]},
        EVIDENCE,
        target="yes",
        pairs=2,
        k=1,
        controls=1,
        resamples=100,
        seed=3,
    )
    assert len(r.pairs) == 2 and len(r.prompts) == 4  # only the names the pairs use are run
    assert len(set(r.pairs[:, 0])) == 2 and len(set(r.pairs[:, 1])) == 2
    assert "each name in one pair only" in r.pairing and r.to_dict()["pair_count"] == 2


def test_encoder_with_compare_reads_every_row(bert_tokenizer):
    enc, _ = build("bert", bert_tokenizer)
    r = bias_probe(
        enc, TEMPLATE, GROUPS, EVIDENCE, compare="a skilled accountant", k=2, controls=1, resamples=200
    )
    assert r.target["kind"] == "cosine" and all(p is None for p in r.positions)

    def pooled(ids):
        with torch.no_grad():
            return enc.model(input_ids=torch.tensor([ids])).last_hidden_state[0].mean(0)

    ref = pooled(bert_tokenizer("a skilled accountant")["input_ids"])
    for i, p in enumerate(r.prompts):
        cos = torch.nn.functional.cosine_similarity(pooled(p.ids), ref, dim=0)
        assert r.outputs[i] == pytest.approx(float(cos), abs=1e-5)
        direct = capture(enc, p.encoded)
        for li, layer in enumerate(direct.layers):
            w = layer.weights.astype(np.float64)  # [head, row, key]: every row
            assert (
                np.abs(r.name_attention[i, li] - w[:, :, list(p.name_tokens)].sum(-1).mean(-1)).max() < 1e-5
            )
    assert any("mean over all rows" in line for line in r.caveats)


def test_masked_lm_reads_the_mask_row(bert_tokenizer):
    config = copy.deepcopy(CONFIGS["bert"])
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 2:
                param.normal_(0.0, 0.3)
    mlm = LoadedModel(model=model, tokenizer=bert_tokenizer, name="tiny-bert-mlm")
    r = bias_probe(
        mlm,
        "{name} has ten years in accounting . hire ? [MASK] .",
        GROUPS,
        "ten years in accounting",
        target="yes",
        k=1,
        controls=0,
        resamples=100,
    )
    token_id = r.target["token_id"]
    for i, p in enumerate(r.prompts):
        mask = p.ids.index(bert_tokenizer.mask_token_id)
        assert r.positions[i] == mask
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([p.ids])).logits[0, mask]
        assert r.outputs[i] == pytest.approx(
            float(torch.log_softmax(logits.double(), -1)[token_id]), abs=1e-5
        )
        w = capture(mlm, p.encoded, rows=[mask]).layers[1].weights[:, 0].astype(np.float64)
        assert np.abs(r.name_attention[i, 1] - w[:, list(p.name_tokens)].sum(-1)).max() < 1e-5


def test_errors_name_the_fix(tiny, bert_tokenizer):
    with pytest.raises(HeadmapError, match="target token"):
        bias_probe(tiny, TEMPLATE, GROUPS, EVIDENCE)
    with pytest.raises(HeadmapError, match="tokens"):
        bias_probe(tiny, TEMPLATE, GROUPS, EVIDENCE, target="yes indeed")
    enc, _ = build("bert", bert_tokenizer)
    with pytest.raises(HeadmapError, match="compare"):
        bias_probe(enc, TEMPLATE, GROUPS, EVIDENCE)
    with pytest.raises(HeadmapError, match="no chat template"):
        bias_probe(tiny, TEMPLATE, GROUPS, EVIDENCE, target="yes", chat=True)
    with pytest.raises(HeadmapError, match="only 8 heads"):
        bias_probe(tiny, TEMPLATE, GROUPS, EVIDENCE, target="yes", k=9)
    with pytest.raises(HeadmapError, match="at least 2 pairs"):
        bias_probe(tiny, TEMPLATE, GROUPS, EVIDENCE, target="yes", pairs=1)
    with pytest.raises(HeadmapError, match="ablation mode"):
        bias_probe(tiny, TEMPLATE, GROUPS, EVIDENCE, target="yes", mode="half")
    with pytest.raises(HeadmapError, match="part of the evidence"):
        bias_probe(tiny, "{name}ten years", {"A": ["ab"], "B": ["cd", "ef"]}, "ten years", target="yes")
    bloom, _ = build("bloom", bert_tokenizer)
    with pytest.raises(HeadmapError, match="cannot be ablated"):
        bias_probe(bloom, TEMPLATE, GROUPS, EVIDENCE, target="yes")


def parsed_tags(page: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    found = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, attrs))

    Collect().feed(page)
    return found


def test_html_png_and_notebook_output_escape_everything(tiny, tmp_path):
    evil = {
        "<b>A</b>": ["<script>alert(1)</script>", "mary"],
        "B&amp;": ["<img src=x onerror=alert(2)>", "$x$ bo"],
    }
    r = bias_probe(
        tiny,
        "</div> {name} has ten years & more . hire ? answer :",
        evil,
        "ten years & more",
        target="yes",
        k=1,
        controls=1,
        resamples=100,
    )
    page = r.save(tmp_path / "bias.html").read_text(encoding="utf-8")
    assert "<script" not in page.lower() and "<img" not in page.lower() and "</div> " not in page
    assert "&lt;script&gt;" in page and "&lt;img src=x" in page and "&lt;b&gt;A&lt;/b&gt;" in page
    tags = parsed_tags(page)
    assert {"script", "img", "link", "iframe", "b"}.isdisjoint(name for name, _ in tags)
    assert not [a for _, attrs in tags for a, _ in attrs if a in ("src", "href") or a.startswith("on")]
    assert "http" not in page
    assert "correlation, not causation" in page and "Layers 0, 1 and heads 0..3" in page
    assert "CrowS-Pairs" in page and "BBQ" in page
    assert r._repr_html_().startswith("<div class='hm-bias'>")
    assert r.save(tmp_path / "bias.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(HeadmapError, match="cannot be saved as .csv"):
        r.save(tmp_path / "bias.csv")
    with pytest.warns(DeprecationWarning, match="use save"):
        assert r.render(tmp_path / "old.html").read_text(encoding="utf-8") == page
    with pytest.warns(DeprecationWarning, match="use figure"):
        r.plot()
    assert isinstance(r, BiasReport)


def test_findings_say_what_was_found(report):
    lines = report.findings
    assert lines[0].startswith("log p('yes'), group A minus group B: ")
    assert "of 8 heads differ" in lines[1]
    assert "Ablating the 2 heads that attend most to the name" in lines[2]
    assert "2 seeded sets" in lines[3]
    assert "not independent" in report.pairing  # every A name with every B name: names repeat


def bare_tokenizer(tokenizer):
    """The tokenizer without [CLS]/[SEP]: the template's first word is position 0, as in SmolLM2."""
    bare = copy.deepcopy(tokenizer)
    bare._tokenizer.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B")
    return bare


SINK_TEMPLATE = "{name} has ten years of experience in accounting . hire ? answer :"


def test_a_name_on_the_first_token_marks_first_token_sinks(bert_tokenizer, tmp_path):
    bare, _ = build("llama", bare_tokenizer(bert_tokenizer))
    r = bias_probe(bare, SINK_TEMPLATE, GROUPS, EVIDENCE, target="yes", k=2, controls=1, resamples=200)
    assert r.sink_prompts.all() and all(p.name_tokens[0] == 0 for p in r.prompts)
    first = np.stack(
        [
            [
                layer.weights[:, 0, 0].astype(np.float64)
                for layer in capture(bare, p.encoded, rows=[-1]).layers
            ]
            for p in r.prompts
        ]
    )  # [prompt, layer, head]: the last row's weight on position 0
    assert np.abs(r.first_attention - first).max() < 1e-5
    share = name_scores(first, r.a_index, r.b_index) / r.name_score
    assert np.allclose(r.name_sink_share, share, atol=1e-6)
    assert (r.sink_heads == (share >= SINK_SHARE)).all() and r.sink_heads.all()  # one-token names: all sinks
    assert r.table["sink"].all() and "sink" in r.to_dict()["head_statistics"][0]
    # Every output says so beside the numbers: findings, warnings, page and figure caption.
    assert "attend most to the name" not in r.findings[2] and "[first-token sink]" in r.findings[2]
    assert any("first token of 6 of 6 prompts" in w for w in r.warnings)
    assert any("not independent" in w for w in r.warnings)  # all pairs: names repeat
    assert "overstate the evidence" in r.findings[0]
    page = r.save(tmp_path / "b.html").read_text(encoding="utf-8")
    assert "first-token sink" in page and "Heads that attend most" not in page


def test_no_sink_flag_where_the_first_token_is_special(report):
    assert not report.sink_prompts.any() and not report.sink_heads.any()
    assert not any("first token" in w for w in report.warnings)
