"""RAG check on a tiny random causal LM (fast): every number equals a direct computation."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from tiny_models import build

from headmap import HeadmapError, RagReport, rag
from headmap.apps.rag import Chunk, as_chunks, read_chunks
from headmap.apps.rag.causal import ranks, verdict
from headmap.apps.rag.evidence import IGNORED_BELOW
from headmap.apps.rag.prompt import build_prompt, with_answer
from headmap.capture import capture, encode_parts

QUESTION = "which room holds the old maps?"
CHUNKS = [
    "the kitchen is on the ground floor next to the garden.",
    "the old maps are kept in the library on the second floor.",
    "the garage has space for two cars and a bicycle.",
]
ANSWER = "the library"


@pytest.fixture(scope="module")
def tiny(bert_tokenizer):
    fast, _ = build("llama", bert_tokenizer)
    return fast


@pytest.fixture(scope="module")
def report(tiny):
    return rag(tiny, QUESTION, CHUNKS, answer=ANSWER)


def parsed_tags(page: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Every real tag of a page with its attributes (escaped text is not a tag)."""
    found = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, attrs))

    Collect().feed(page)
    return found


def answer_logprob(loaded, prompt_text, answer_ids):
    """Direct teacher-forced computation: full logits, log_softmax at the predicting positions, summed."""
    prompt_ids = loaded.tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + list(answer_ids)])
    with torch.no_grad():
        logits = loaded.model(input_ids=ids).logits[0]
    logp = torch.log_softmax(logits.double(), dim=-1)
    p = len(prompt_ids)
    return sum(float(logp[p - 1 + t, a]) for t, a in enumerate(answer_ids))


def test_prompt_layout_and_chunk_spans(tiny):
    prompt = build_prompt(tiny.tokenizer, QUESTION, CHUNKS)
    assert "[1] " + CHUNKS[0] in prompt.text and "[3] " + CHUNKS[2] in prompt.text
    assert prompt.text.endswith(f"Question: {QUESTION}\nAnswer:\n")  # the plain layout: no chat template
    for (a, b), (first, stop), text in zip(prompt.chunk_chars, prompt.chunk_tokens, CHUNKS):
        assert prompt.text[a:b] == text
        tokens = prompt.encoded.tokens
        assert tokens.text[tokens.offsets[first][0] : tokens.offsets[stop - 1][1]].strip() == text
        # the token before the chunk is its label's "]"
        assert tokens.tokens[first - 1] == "]"


def test_chunk_mass_sums_to_the_rows_attention_on_the_chunks(tiny, report):
    prompt = build_prompt(tiny.tokenizer, QUESTION, CHUNKS)
    answer_ids = list(report.answer_ids)
    full = with_answer(prompt, answer_ids, tiny.tokenizer)
    p, a = len(prompt), len(answer_ids)
    direct = capture(tiny, full, rows=list(range(p - 1, p + a - 1)))
    inside = np.concatenate([np.arange(f, s) for f, s in prompt.chunk_tokens])
    for li, layer in enumerate(direct.layers):
        w = layer.weights.astype(np.float64)  # [head, answer_token, key]
        total = w[:, :, inside].sum(-1)
        assert np.abs(report.mass[li].sum(-1) - total).max() < 1e-5
        for c, (f, s) in enumerate(prompt.chunk_tokens):
            assert np.abs(report.mass[li, :, :, c] - w[:, :, f:s].sum(-1)).max() < 1e-5
        assert np.abs(report.answer_mass[li] - w[:, :, p:].sum(-1)).max() < 1e-5
        # lookback from the full rows: step t >= 1, mean on chunks / (that + mean on the t earlier answer tokens)
        ctx = w[:, 1:, inside].mean(-1)
        new = np.stack([w[:, t, p : p + t].mean(-1) for t in range(1, a)], axis=1)
        assert np.abs(report.lookback[li] - (ctx / (ctx + new)).mean(-1)).max() < 1e-5
    assert report.layers == ("layer.0", "layer.1") and report.heads == (0, 1, 2, 3)
    assert np.allclose(report.attention, report.mass.mean(axis=(0, 1, 2)))


def test_calibration_is_the_dummy_in_the_same_slot(tiny, report):
    slot = 1
    texts = list(CHUNKS)
    texts[slot] = report.dummy_texts[slot]
    assert (
        abs(
            len(tiny.tokenizer(texts[slot], add_special_tokens=False)["input_ids"])
            - report.chunk_token_counts[slot]
        )
        <= 1
    )
    replaced = build_prompt(tiny.tokenizer, QUESTION, texts)
    full = with_answer(replaced, report.answer_ids, tiny.tokenizer)
    p, a = len(replaced), len(report.answer_ids)
    direct = capture(tiny, full, rows=list(range(p - 1, p + a - 1)))
    f, s = replaced.chunk_tokens[slot]
    dummy = np.stack([layer.weights[:, :, f:s].sum(-1) for layer in direct.layers])
    assert np.abs(report.dummy_mass[..., slot] - dummy).max() < 1e-5
    assert report.calibrated_attention[slot] == pytest.approx(report.attention[slot] - dummy.mean(), abs=1e-6)
    expected = [
        "ignored" if c < IGNORED_BELOW * d else "attended"
        for c, d in zip(report.calibrated_attention, report.dummy_attention)
    ]
    assert report.flags == expected


def test_ablation_logprobs_equal_a_direct_computation(tiny, report):
    assert report.answer_ids == tuple(tiny.tokenizer(ANSWER, add_special_tokens=False)["input_ids"])
    assert report.answer_logprob == pytest.approx(
        answer_logprob(tiny, report.prompt, report.answer_ids), abs=1e-5
    )
    for c in range(len(CHUNKS)):
        assert CHUNKS[c] not in report.prompts_without[c]
        others = [t for i, t in enumerate(CHUNKS) if i != c]
        assert report.prompts_without[c] == build_prompt(tiny.tokenizer, QUESTION, others).text
        assert "[2] " + others[1] in report.prompts_without[c]  # renumbered
        direct = answer_logprob(tiny, report.prompts_without[c], report.answer_ids)
        assert report.logprob_without[c] == pytest.approx(direct, abs=1e-5)
        assert report.logprob_drop[c] == pytest.approx(report.answer_logprob - direct, abs=1e-5)


def test_agreement_statistics_are_scipys(report):
    rho = spearmanr(report.attention, report.logprob_drop).statistic
    assert report.spearman == pytest.approx(rho, abs=1e-12)
    assert report.spearman_calibrated == pytest.approx(
        spearmanr(report.calibrated_attention, report.logprob_drop).statistic, abs=1e-12
    )
    table = report.table
    assert list(table.index) == [1, 2, 3] and list(table["id"]) == ["1", "2", "3"]
    assert table["ablation_rank"].tolist() == ranks(report.logprob_drop).tolist()
    assert sorted(table["attention_rank"]) == [1, 2, 3]


def test_verdict_wording():
    ids = ["a", "b", "c", "d"]
    drop = np.array([5.0, 0.1, 0.0, -0.1])
    assert "is supported" in verdict(ids, np.array([4.0, 3, 2, 1]), drop, 1.0, "X")
    assert "partly supported" in verdict(ids, np.array([4.0, 1, 2, 3]), drop, -0.2, "X")
    text = verdict(ids, np.array([1.0, 4, 3, 2]), drop, -0.4, "X")
    assert "not supported" in text and "'b' first" in text and "'a' hurts" in text
    assert "too few" in verdict(ids[:2], np.array([1.0, 2]), drop[:2], float("nan"), "X")
    assert "by -5.000" in verdict(ids[:1], np.array([1.0]), drop[:1], float("nan"), "X")
    assert "not testable" in verdict(ids, drop, np.zeros(4), float("nan"), "X")
    assert ranks(np.array([0.2, 0.5, 0.2])).tolist() == [2, 1, 3]


def test_json_holds_what_a_rerun_needs(tiny, report, tmp_path):
    path = report.save(tmp_path / "rag.json")
    data = json.loads(
        path.read_text(encoding="utf-8"), parse_constant=lambda c: pytest.fail(f"bare {c} in JSON")
    )
    assert data["prompt"] == report.prompt and data["answer_ids"] == list(report.answer_ids)
    assert data["answer_logprob"] == pytest.approx(report.answer_logprob)
    for c, chunk in enumerate(data["chunks"]):
        assert chunk["id"] == str(c + 1) and chunk["text"] == CHUNKS[c]
        assert chunk["attention"] == pytest.approx(report.attention[c])
        assert chunk["calibrated_attention"] == pytest.approx(report.calibrated_attention[c])
        assert chunk["prompt_without"] == report.prompts_without[c]
        assert chunk["answer_logprob_without"] == pytest.approx(report.logprob_without[c])
        assert chunk["flag"] in ("attended", "ignored")
    # a re-run from the JSON alone (exact ids) gives the same numbers
    again = rag(tiny, data["question"], [c["text"] for c in data["chunks"]], answer=data["answer_ids"])
    assert again.prompt == data["prompt"]
    assert np.abs(again.logprob_without - report.logprob_without).max() < 1e-6
    assert np.abs(again.mass - report.mass).max() < 1e-6


def test_generation_is_greedy_and_records_truncation(tiny):
    prompt = build_prompt(tiny.tokenizer, QUESTION, CHUNKS[:2])
    out = rag(tiny, QUESTION, CHUNKS[:2], max_new_tokens=3)
    ids = torch.tensor([prompt.ids])
    with torch.no_grad():
        greedy = tiny.model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=3
        )[0, len(prompt) :].tolist()
    assert (
        list(out.answer_ids) == greedy and out.generated and out.truncated
    )  # no EOS in the tiny model's config
    assert out.to_dict()["answer_source"] == "generated (greedy)" and out.max_new_tokens == 3


def test_html_png_and_notebook_output_escape_everything(tiny, tmp_path):
    evil = [
        Chunk("<b>x</b>", "<script>alert(1)</script> the maps are here"),
        Chunk("two", "<img src=x onerror=alert(2)> the garden & the $x$ shed"),
    ]
    report = rag(tiny, "where are </div> the maps?", evil, answer="<i>here</i>")
    page = report.save(tmp_path / "rag.html").read_text(encoding="utf-8")
    assert "<script" not in page.lower() and "<img" not in page.lower() and "</div> the maps" not in page
    assert "&lt;script&gt;" in page and "&lt;img src=x" in page and "&lt;b&gt;x&lt;/b&gt;" in page
    tags = parsed_tags(page)
    assert {"script", "img", "link", "iframe", "b", "i"}.isdisjoint(name for name, _ in tags)
    assert not [a for _, attrs in tags for a, _ in attrs if a in ("src", "href") or a.startswith("on")]
    assert "http" not in page  # nothing fetched
    assert "correlation, not causation" in page and "layers 0, 1" in page
    assert report._repr_html_().startswith("<div class='hm-rag'>")
    assert report.save(tmp_path / "rag.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(HeadmapError, match="cannot be saved as .csv"):
        report.save(tmp_path / "rag.csv")
    with pytest.warns(DeprecationWarning, match="use save"):
        assert report.render(tmp_path / "old.html").read_text(encoding="utf-8") == page
    with pytest.warns(DeprecationWarning, match="use figure"):
        report.plot()
    assert isinstance(report, RagReport)


def test_chunk_files(tmp_path):
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"id": "a", "text": "first"}\n\n{"text": "second"}\n{"id": 7, "text": "third"}\n')
    assert read_chunks(jsonl) == [Chunk("a", "first"), Chunk("2", "second"), Chunk("7", "third")]
    txt = tmp_path / "c.txt"
    txt.write_text("one line\nstill one\n\n  \n\ntwo\r\n\r\nthree\n")
    assert [c.text for c in read_chunks(txt)] == ["one line\nstill one", "two", "three"]
    assert [c.id for c in read_chunks(txt)] == ["1", "2", "3"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "broken"\n')
    with pytest.raises(HeadmapError, match=r"bad\.jsonl, line 2: not valid JSON"):
        read_chunks(bad)
    bad.write_text('{"text": "fine"}\n["a list"]\n')
    with pytest.raises(HeadmapError, match=r"line 2: each line needs an object"):
        read_chunks(bad)
    bad.write_text('{"id": "x", "text": "a"}\n{"id": "x", "text": "b"}\n')
    with pytest.raises(HeadmapError, match="appears twice"):
        read_chunks(bad)
    with pytest.raises(HeadmapError, match="does not exist"):
        read_chunks(tmp_path / "none.txt")
    with pytest.raises(HeadmapError, match=".jsonl"):
        read_chunks(tmp_path / "c.csv")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(HeadmapError, match="no chunk"):
        read_chunks(tmp_path / "empty.txt")
    with pytest.raises(HeadmapError, match="not one string"):
        as_chunks("a single string")


def test_bad_input(tiny):
    with pytest.raises(HeadmapError, match="question is empty"):
        rag(tiny, "  ", CHUNKS, answer=ANSWER)
    with pytest.raises(HeadmapError, match="answer is empty"):
        rag(tiny, QUESTION, CHUNKS, answer=" ")
    with pytest.raises(HeadmapError, match="vocabulary"):
        rag(tiny, QUESTION, CHUNKS, answer=[10**7])


def test_exact_ids_reach_the_model(tiny):
    """The teacher-forced input is the prompt's ids followed by the answer ids, nothing re-tokenized."""
    prompt = build_prompt(tiny.tokenizer, QUESTION, CHUNKS)
    full = with_answer(prompt, [2182, 2003], tiny.tokenizer)
    assert list(full.ids) == prompt.ids + [2182, 2003]
    assert full.ids[: len(prompt)] == encode_parts(tiny.tokenizer, [prompt.text]).ids


def test_one_chunk_and_the_coloured_pieces(tiny, report):
    for pieces, weights, text in zip(report.chunk_pieces, report.piece_attention, CHUNKS):
        assert "".join(pieces) == text and len(pieces) == len(weights)
    single = rag(tiny, QUESTION, [CHUNKS[1]], answer=ANSWER)
    assert "[1]" not in single.prompts_without[0] and single.prompts_without[0].endswith("Answer:\n")
    assert single.logprob_without[0] == pytest.approx(
        answer_logprob(tiny, single.prompts_without[0], single.answer_ids), abs=1e-5
    )
    assert "one chunk, nothing to rank" in single.verdict and np.isnan(single.spearman)
    assert json.loads(json.dumps(single.to_dict(), allow_nan=False))["spearman"] is None


def test_a_prompt_past_the_position_table_is_refused(bert_tokenizer):
    gpt2, _ = build("gpt2", bert_tokenizer)  # 64 positions
    with pytest.raises(HeadmapError, match="at most 64"):
        rag(gpt2, QUESTION, CHUNKS, answer=ANSWER)
