"""``headmap rag`` on a tiny random causal LM saved as a model folder, and its error paths."""

from __future__ import annotations

import json

import pytest
from tiny_models import build

from headmap.cli import main


@pytest.fixture(scope="module")
def folder(bert_tokenizer, tmp_path_factory):
    fast, _ = build("llama", bert_tokenizer)
    path = tmp_path_factory.mktemp("tiny-llama")
    fast.model.save_pretrained(path)
    bert_tokenizer.save_pretrained(path)
    return path


def test_rag_writes_json_html_and_png(folder, tmp_path, capsys):
    chunks = tmp_path / "chunks.txt"
    chunks.write_text(
        "the kitchen is next to the garden.\n\nthe maps are in the library.\n\nthe garage is empty.\n"
    )
    outs = [tmp_path / "r.json", tmp_path / "r.html", tmp_path / "r.png"]
    argv = [
        "rag",
        "-q",
        "where are the maps?",
        "-c",
        str(chunks),
        "-m",
        str(folder),
        "--answer",
        "the library",
    ]
    assert main([*argv, *(x for o in outs for x in ("-o", str(o)))]) == 0
    printed = capsys.readouterr().out
    assert "logprob_drop" in printed and "Spearman" in printed and "correlation, not causation" in printed
    data = json.loads(outs[0].read_text())
    assert [c["id"] for c in data["chunks"]] == ["1", "2", "3"] and data["answer_source"] == "given"
    assert "<!DOCTYPE html>" in outs[1].read_text() and outs[2].read_bytes()[:4] == b"\x89PNG"
    # the exact ids from the JSON re-run the check to the same numbers
    again = tmp_path / "again.json"
    ids = ",".join(str(i) for i in data["answer_ids"])
    assert (
        main(
            [
                "rag",
                "-q",
                "where are the maps?",
                "-c",
                str(chunks),
                "-m",
                str(folder),
                "--answer-ids",
                ids,
                "--quiet",
                "-o",
                str(again),
            ]
        )
        == 0
    )
    rerun = json.loads(again.read_text())
    assert [c["answer_logprob_without"] for c in rerun["chunks"]] == pytest.approx(
        [c["answer_logprob_without"] for c in data["chunks"]], abs=1e-6
    )


def test_console_summary_carries_the_caveats_that_change_the_numbers(folder, tmp_path, capsys):
    chunks = tmp_path / "chunks.txt"
    chunks.write_text("the maps are in the library.\n\nthe garage is empty.\n")
    argv = ["rag", "-q", "where are the maps?", "-c", str(chunks), "-m", str(folder), "--max-new-tokens", "2"]
    assert main([*argv, "-o", str(tmp_path / "r.html")]) == 0
    printed = capsys.readouterr().out
    assert "was cut at --max-new-tokens 2" in printed  # the answer and its log p are cut short
    assert "flagged ignored when its calibrated attention is below" in printed  # the flag column
    assert "Spearman over 2 chunks is a coarse guide" in printed
    assert "cut there before the model ended it" in (tmp_path / "r.html").read_text()


def test_rag_errors_are_one_line(folder, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": "typo"}\n')
    assert main(["rag", "-q", "x?", "-c", str(bad), "-m", str(folder), "--answer", "y"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.jsonl, line 2" in err
    good = tmp_path / "c.txt"
    good.write_text("one chunk\n")
    assert main(["rag", "-q", "x?", "-c", str(good), "-m", str(folder), "-o", str(tmp_path / "r.csv")]) == 1
    assert "extension" in capsys.readouterr().err
    assert main(["rag", "-q", "x?", "-c", str(good), "-m", str(folder), "--answer-ids", "1,x"]) == 1
    assert "--answer-ids" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["rag", "-c", str(good)])
    assert exc.value.code == 2


@pytest.mark.slow
def test_rag_on_an_encoder_exits_1(tmp_path, capsys):
    good = tmp_path / "c.txt"
    good.write_text("one chunk\n")
    assert main(["rag", "-q", "x?", "-c", str(good), "-m", "minilm", "--answer", "y"]) == 1
    assert "causal language model" in capsys.readouterr().err
