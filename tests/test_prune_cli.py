"""``headmap prune`` on a tiny random BERT saved as a model folder, and its error paths."""

from __future__ import annotations

import json

import pytest
from test_prune import HELD, TEXTS
from tiny_models import build

import headmap
from headmap.cli import main


@pytest.fixture(scope="module")
def files(bert_tokenizer, tmp_path_factory):
    fast, _ = build("bert", bert_tokenizer)
    root = tmp_path_factory.mktemp("tiny-bert")
    fast.model.save_pretrained(root / "model")
    bert_tokenizer.save_pretrained(root / "model")
    (root / "texts.txt").write_text("\n".join(TEXTS) + "\n")
    (root / "held.txt").write_text("\n".join(HELD) + "\n")
    return root


def test_prune_cuts_saves_and_reports(files, tmp_path, capsys):
    out, report = tmp_path / "cut", tmp_path / "r.json"
    argv = [
        "prune",
        "-m",
        str(files / "model"),
        "--texts",
        str(files / "texts.txt"),
        "--heldout",
        str(files / "held.txt"),
        "--amount",
        "0.25",
        "--step",
        "0.25",
        "--latency-repeats",
        "1",
        "--out",
        str(out),
        "-o",
        str(report),
        "-o",
        str(tmp_path / "r.html"),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Cut 2 of 8 heads" in printed and "Spearman" in printed
    data = json.loads(report.read_text())
    assert data["pruning"]["heads_removed"] == 2 and data["pruning"]["folder"] == str(out)
    cut = headmap.load(str(out))
    assert sum(len(layer["query"]) for layer in cut.model.config.headmap_pruned_heads["layers"]) == 6
    assert "<!DOCTYPE html>" in (tmp_path / "r.html").read_text()
    assert main(argv) == 1  # the folder exists now
    assert "not an empty folder" in capsys.readouterr().err


def test_prune_errors_are_one_line(files, tmp_path, capsys):
    base = [
        "prune",
        "-m",
        str(files / "model"),
        "--texts",
        str(files / "texts.txt"),
        "--heldout",
        str(files / "held.txt"),
    ]
    for extra, message in [
        ([], "nothing to do"),
        (["--curve", "--out", str(tmp_path / "x")], "give --amount"),
        (["--amount", "0.95"], "would empty a layer"),
        (["--curve", "--seeds", "a"], "--seeds"),
        (["--curve", "-o", str(tmp_path / "r.csv")], "extension"),
    ]:
        assert main([*base, *extra]) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err
    with pytest.raises(SystemExit) as exc:
        main(["prune", "--amount", "0.3"])
    assert exc.value.code == 2
