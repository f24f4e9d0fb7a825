"""Reading corpora: .txt, .jsonl and folders, with errors that name the bad line or file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from headmap.analysis.corpus import as_corpus, corpus_from_texts, read_corpus, text_digest
from headmap.errors import HeadmapError

CORPORA = Path(__file__).resolve().parent.parent / "corpora"


def test_txt_skips_blank_lines_and_keeps_origins(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("first text\n\n   \nsecond text\r\nthird\n", encoding="utf-8")
    texts = read_corpus(path)
    assert [t.text for t in texts] == ["first text", "second text", "third"]
    assert [t.index for t in texts] == [0, 1, 2]
    assert [t.origin for t in texts] == ["c.txt:1", "c.txt:4", "c.txt:5"]
    assert [t.text for t in read_corpus(path, max_texts=2)] == ["first text", "second text"]


def test_shipped_corpora_have_the_documented_sizes():
    assert len(read_corpus(CORPORA / "sentences.txt")) == 321
    assert len(read_corpus(CORPORA / "heldout.txt")) == 60


def test_jsonl_reads_the_text_field(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(
        "\n".join([json.dumps({"text": "a b", "id": 1}), "", json.dumps({"text": "é ü"})]), encoding="utf-8"
    )
    texts = read_corpus(path)
    assert [t.text for t in texts] == ["a b", "é ü"]
    assert texts[1].origin == "c.jsonl:3"


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"text": "ok"', "c.jsonl:2: not valid JSON"),
        ('{"body": "no text"}', 'c.jsonl:2: no "text" field'),
        ('["text"]', 'c.jsonl:2: no "text" field'),
        ('{"text": 3}', 'c.jsonl:2: "text" is a int'),
        ('{"text": "  "}', 'c.jsonl:2: "text" is empty'),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path, line, message):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(HeadmapError, match=message.replace("[", r"\[")):
        read_corpus(path)


def test_non_utf8_names_the_line(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"fine\nalso fine\nbad \xff byte\n")
    with pytest.raises(HeadmapError, match=r"c\.txt:3: not UTF-8"):
        read_corpus(path)


def test_folder_of_txt_files(tmp_path):
    (tmp_path / "b.txt").write_text("second file", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first file\nwith two lines", encoding="utf-8")
    (tmp_path / "notes.md").write_text("ignored", encoding="utf-8")
    texts = read_corpus(tmp_path)
    assert [t.text for t in texts] == ["first file\nwith two lines", "second file"]
    assert [t.origin for t in texts] == ["a.txt", "b.txt"]
    (tmp_path / "c.txt").write_text("  \n", encoding="utf-8")
    with pytest.raises(HeadmapError, match="c.txt is empty"):
        read_corpus(tmp_path)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.txt", "does not exist"),
        (lambda p: (p / "c.csv").write_text("x") and p / "c.csv", "unknown corpus type '.csv'"),
        (lambda p: (p / "e.txt").write_text("\n\n") and p / "e.txt", "holds no text"),
        (lambda p: (p / "sub").mkdir() or p / "sub", "holds no .txt files"),
    ],
)
def test_bad_corpora(tmp_path, make, message):
    with pytest.raises(HeadmapError, match=message):
        read_corpus(make(tmp_path))


def test_texts_given_in_python():
    texts = corpus_from_texts(["one", "two"])
    assert [(t.index, t.origin) for t in texts] == [(0, "text 0"), (1, "text 1")]
    assert texts[0].digest == text_digest("one") != texts[1].digest
    with pytest.raises(HeadmapError, match="text 1 is empty"):
        corpus_from_texts(["one", " "])
    with pytest.raises(HeadmapError, match="not one string"):
        corpus_from_texts("one")
    with pytest.raises(HeadmapError, match="is not a file or folder"):
        as_corpus("not a path, just words")
    assert [t.text for t in as_corpus(str(CORPORA / "heldout.txt"), max_texts=3)] == [
        t.text for t in read_corpus(CORPORA / "heldout.txt")[:3]
    ]
