"""explain() end to end: agreement numbers, the files it writes (hostile tokens included), the
command line, threads, and once on each bundled model against the model's own numbers."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import TROPHY
from tiny_models import build

import headmap
from headmap.attribution.agreement import agreement_table, rank_agreement
from headmap.attribution.explanation import Explanation
from headmap.attribution.target import encode_text
from headmap.cli import main
from headmap.cli.explain import summary
from headmap.errors import HeadmapError
from headmap.result import CAUSATION_WARNING

PREFIX = "The trophy didn't fit in the suitcase because it was too"
COMPARE = "A bag that is too small."
HOSTILE = "Ignore </script><img src=x onerror=alert(1)> & <b>bold</b>\u2028 now."
TOL = 1e-5


@pytest.fixture(scope="module")
def llama(bert_tokenizer):
    return build("llama", bert_tokenizer)[0]


@pytest.fixture(scope="module")
def tiny_ex(llama):
    return headmap.explain(llama, TROPHY, 2000, n_steps=8, max_steps=32)


# -- agreement ------------------------------------------------------------------------------------
def test_rank_agreement_worked_by_hand():
    a = np.array([1.0, 2, 3, 4, 5])
    assert rank_agreement(a, a[::-1])[:2] == pytest.approx((-1.0, -1.0))
    # One adjacent swap: Spearman 1 - 6 * 2 / (5 * 24) = 0.9; Kendall (9 - 1) / 10 = 0.8.
    assert rank_agreement(a, np.array([1.0, 3, 2, 4, 5]))[:2] == pytest.approx((0.9, 0.8))
    rho, tau, n = rank_agreement(np.array([1.0, 2, np.nan, 3]), np.array([3.0, 2, 1, 1]))
    assert n == 3 and rho == pytest.approx(-1.0)
    assert np.isnan(rank_agreement(a, np.ones(5))[0])  # a constant method ranks nothing


def test_agreement_table_pairs_every_method_and_flags_occlusion():
    scores = {
        "occlusion": np.array([0.5, -1.0, 2.0, 0.1, 9.0]),
        "attention": np.array([0.1, 0.3, 0.2, 0.0, 5.0]),
        "ig": np.array([1.0, -2.0, 3.0, 0.5, -7.0]),
    }
    include = np.array([True, True, True, True, False])
    table = agreement_table(scores, include)
    assert list(zip(table.method_a, table.method_b)) == [
        ("attention", "ig"),
        ("attention", "occlusion"),
        ("ig", "occlusion"),
    ]
    assert table.with_occlusion.tolist() == [False, True, True]
    # Over the four included units: occlusion ranks [2, 0, 3, 1], ig the same -> 1.
    assert table.spearman.iloc[2] == pytest.approx(1.0) and table.n.tolist() == [4, 4, 4]
    # attention [1, 3, 2, 0] vs occlusion [2, 0, 3, 1]: d = [-1, 3, -1, -1], 1 - 6 * 12 / 60 = -0.2.
    assert table.spearman.iloc[1] == pytest.approx(-0.2)
    # Magnitudes: |occlusion| ranks [1, 2, 3, 0], attention [1, 3, 2, 0]: d = [0, -1, 1, 0] -> 0.8.
    assert table.spearman_abs.iloc[1] == pytest.approx(0.8)


def test_words_sum_their_tokens_except_occlusion(tiny_ex):
    words = tiny_ex.to_words()
    assert words.unit == "word" and len(words.axis) == len(tiny_ex.groups) < len(tiny_ex.tokens)
    for name in tiny_ex.methods:
        if name == "occlusion":
            continue
        expected = [tiny_ex.token_scores[name][list(g)].sum() for g in tiny_ex.groups]
        assert np.allclose(words.scores[name], expected, atol=1e-12)
    table = words.agreement()
    n = len(tiny_ex.methods)
    assert len(table) == n * (n - 1) // 2 and table.with_occlusion.sum() == n - 1
    assert list(words.causal_agreement().method) == [m for m in tiny_ex.methods if m != "occlusion"]
    assert list(words.table.columns) == ["word", "included", *tiny_ex.methods]


# -- files ----------------------------------------------------------------------------------------
def test_json_holds_everything_to_recompute_the_checks(tiny_ex, llama, tmp_path):
    path = tiny_ex.save(tmp_path / "why.json")
    data = json.loads(path.read_text())
    ids, _ = encode_text(llama, TROPHY)
    with torch.no_grad():
        logits = llama.model(input_ids=torch.tensor([ids])).logits[0, -1]
    assert data["output"] == pytest.approx(float(torch.log_softmax(logits, -1)[2000]), abs=TOL)
    assert data["baseline_output"] == tiny_ex.baseline_output
    ig = data["methods"]["ig"]
    assert sum(ig["token_scores"]) == pytest.approx(
        data["output"] - data["baseline_output"] + data["ig"]["delta"], abs=1e-4
    )
    assert data["ig"]["steps"] == tiny_ex.info["ig"]["steps"]
    assert data["methods"]["occlusion"]["token_scores"][0] is None  # [CLS] is not occluded: null, not NaN
    assert len(data["agreement"]["words"]) == len(tiny_ex.to_words().agreement())
    assert CAUSATION_WARNING in data["caveats"]
    back = Explanation.load(path)
    assert back.to_dict() == tiny_ex.to_dict()
    assert tiny_ex.save(tmp_path / "again").suffix == ".json"


def test_static_formats(tiny_ex, tmp_path):
    words = tiny_ex.to_words()
    assert words.save(tmp_path / "w.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in words.save(tmp_path / "w.svg").read_bytes()[:3000]
    assert words.save(tmp_path / "w.pdf").read_bytes()[:5] == b"%PDF-"
    with pytest.raises(HeadmapError, match="cannot be saved as .gif"):
        words.save(tmp_path / "w.gif")
    with pytest.raises(HeadmapError, match="does not exist"):
        words.save(tmp_path / "missing" / "w.png")
    with pytest.warns(DeprecationWarning, match="use save"):
        assert words.render(tmp_path / "old.json").read_text() == words.save(tmp_path / "w.json").read_text()
    with pytest.warns(DeprecationWarning, match="use figure"):
        words.plot()


def test_an_unconverged_ig_row_is_marked_in_every_output(tiny_ex, tmp_path):
    def with_ig(converged):
        return replace(tiny_ex, info={**tiny_ex.info, "ig": {**tiny_ex.info["ig"], "converged": converged}})

    ok, bad = with_ig(True).to_words(), with_ig(False).to_words()
    assert ok.label("ig") == "ig" and not ok.flags and ok.to_dict()["methods"]["ig"]["flag"] is None
    assert bad.label("ig") == "ig (NOT converged)" and bad.label("occlusion") == "occlusion"
    text = summary(bad)
    assert "ig (NOT converged)" in text.splitlines()[1]  # the table's header: the IG column itself
    assert "  ig (NOT converged)" in text  # its agreement row with occlusion
    assert bad.to_dict()["methods"]["ig"]["flag"] == "NOT converged"
    page = bad.save(tmp_path / "w.html").read_text()
    assert '<th class="flag">ig (NOT converged)</th>' in page
    labels = [t.get_text() for t in bad.figure().axes[0].get_yticklabels()]
    assert "ig (NOT converged)" in labels and "ig" not in labels
    assert Explanation.from_dict(bad.to_dict()).label("ig") == "ig (NOT converged)"


def test_hostile_tokens_are_escaped_on_every_html_path(llama, tmp_path):
    evil = replace(llama, name="<b>model</b>")
    ex = headmap.explain(evil, HOSTILE, methods=["attention", "occlusion"])
    for html in (
        ex.save(tmp_path / "t.html").read_text(),
        ex.to_words().save(tmp_path / "w.html").read_text(),
        ex._repr_html_(),
    ):
        assert "<img" not in html and "<b>" not in html and "\u2028" not in html
        assert "&lt;" in html and "&lt;b&gt;model&lt;/b&gt;" in html
        assert re.search(r"<script[^>]+src=", html) is None and "<link" not in html and "http" not in html
    page = (tmp_path / "w.html").read_text()
    assert "&lt;/script&gt;&lt;img" in page  # the word, shown as typed
    assert page.count("</script>") == 1  # only the block's own end
    start = page.index('id="headmap-explanation">') + len('id="headmap-explanation">')
    block = page[start : page.index("</script>")]
    assert "<" not in block and ">" not in block and "&" not in block
    assert json.loads(block) == ex.to_words().to_dict()
    assert CAUSATION_WARNING in page


# -- errors ---------------------------------------------------------------------------------------
def test_bad_input_names_the_fix(llama, bert_tokenizer):
    with pytest.raises(HeadmapError, match="2 tokens"):
        headmap.explain(llama, TROPHY, "suitcases", methods=["occlusion"])
    with pytest.raises(HeadmapError, match="unknown method"):
        headmap.explain(llama, TROPHY, methods="attention,shap")
    with pytest.raises(HeadmapError, match="position 99 is out of range"):
        headmap.explain(llama, TROPHY, position=99)
    with pytest.raises(HeadmapError, match="not both"):
        headmap.explain(llama, TROPHY, " big", compare=COMPARE)
    with pytest.raises(HeadmapError, match="empty"):
        headmap.explain(llama, "  ")
    t5, _ = build("t5", bert_tokenizer)
    with pytest.raises(HeadmapError, match="encoder-decoder"):
        headmap.explain(t5, TROPHY)
    bert, _ = build("bert", bert_tokenizer)
    with pytest.raises(HeadmapError, match="compare"):
        headmap.explain(bert, TROPHY)


def test_threads_get_their_serial_results(llama):
    texts = [TROPHY, PREFIX, "Short one.", "Attention is correlation, not causation."]

    def run(text):
        return headmap.explain(
            llama, text, 2000, methods=["ig", "attention_x_gradient", "occlusion"], n_steps=4, max_steps=4
        )

    serial = [run(t) for t in texts]
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(run, texts))
    for a, b in zip(serial, concurrent):
        for name in a.methods:
            assert np.allclose(a.token_scores[name], b.token_scores[name], atol=1e-6, equal_nan=True), name


# -- the bundled models ---------------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_output_is_the_models_own_log_probability(smollm2, tmp_path):
    ex = headmap.explain(smollm2, PREFIX, " big", n_steps=8, max_steps=8)
    assert set(ex.methods) == set(headmap.attribution.METHODS) - {"calibrated"}  # it needs a calibration
    data = json.loads(ex.to_words().save(tmp_path / "why.json").read_text())
    ids, _ = encode_text(smollm2, PREFIX)
    token = smollm2.tokenizer(" big", add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        logits = smollm2.model(input_ids=torch.tensor([ids])).logits[0, -1]
    assert data["target"]["token_id"] == token
    assert data["output"] == pytest.approx(float(torch.log_softmax(logits, -1)[token]), abs=TOL)
    ig = ex.info["ig"]
    assert ex.token_scores["ig"].sum() == pytest.approx(
        ex.output - ex.baseline_output + ig["delta"], abs=1e-3
    )
    assert ig["converged"] == (abs(ig["delta"]) <= 0.05 * abs(ex.output - ex.baseline_output))
    assert ex.to_words().save(tmp_path / "why.png").stat().st_size > 10_000


@pytest.mark.slow
def test_minilm_cosine_is_the_sentence_similarity(minilm, tmp_path):
    ex = headmap.explain(minilm, TROPHY, compare=COMPARE)
    pooled = []
    for text in (TROPHY, COMPARE):
        enc = minilm.tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            pooled.append(minilm.model(**enc).last_hidden_state[0].mean(0))
    assert ex.output == pytest.approx(float(torch.nn.functional.cosine_similarity(*pooled, dim=0)), abs=TOL)
    assert ex.info["ig"]["converged"]
    assert (
        abs(ex.token_scores["ig"].sum() - (ex.output - ex.baseline_output))
        <= abs(ex.info["ig"]["delta"]) + 1e-6
    )
    assert "flow" in ex.methods and ex.token_scores["flow"].sum() == pytest.approx(1.0)


@pytest.mark.slow
def test_cli_explain(tmp_path, capsys):
    out = tmp_path / "why.png"
    assert (
        main(
            [
                "explain",
                PREFIX,
                "--model",
                "smollm2",
                "--target",
                " big",
                "--methods",
                "attention,rollout,ig,occlusion",
                "--steps",
                "8",
                "--max-steps",
                "8",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "log p(' big')" in printed and "occlusion" in printed and "how causal" in printed
    saved = tmp_path / "why.json"
    assert (
        main(
            [
                "explain",
                TROPHY,
                "--model",
                "minilm",
                "--compare",
                COMPARE,
                "--methods",
                "rollout,occlusion",
                "-o",
                str(saved),
            ]
        )
        == 0
    )
    assert json.loads(saved.read_text())["target"]["kind"] == "cosine"


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["explain", TROPHY, "--model", "minilm"], "--compare"),
        (["explain", TROPHY, "--model", "minilm", "--compare", "x", "--methods", "flow", "--tokens"], None),
        (
            ["explain", "word " * 60, "--model", "minilm", "--compare", "x", "--methods", "flow"],
            "use rollout",
        ),
        (["explain", TROPHY, "--model", "minilm", "--compare", "x", "--methods", "magic"], "unknown method"),
        (["explain", TROPHY, "-o", "why.gif"], "extension"),
    ],
)
def test_cli_explain_errors_are_one_line(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(args)
    err = capsys.readouterr().err.strip()
    if message is None:
        assert code == 0
        return
    assert code == 1 and err.startswith("headmap: error:") and message in err
    assert len(err.splitlines()) == 1
