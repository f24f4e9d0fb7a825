"""``headmap bias`` on a tiny random causal LM saved as a model folder, and its error paths."""

from __future__ import annotations

import json

import pytest
from test_bias import SINK_TEMPLATE, bare_tokenizer
from tiny_models import build

import headmap.cli.bias
from headmap.cli import main

TEMPLATE = "the applicant {name} has ten years of experience . hire ? answer :"


@pytest.fixture(scope="module")
def folder(bert_tokenizer, tmp_path_factory):
    fast, _ = build("llama", bert_tokenizer)
    path = tmp_path_factory.mktemp("tiny-llama")
    fast.model.save_pretrained(path)
    bert_tokenizer.save_pretrained(path)
    return path


@pytest.fixture()
def names(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("# group A, CC0\nmary\nsusan\nlinda\n", encoding="utf-8")
    b.write_text("james\nrobert\njohn\n", encoding="utf-8")
    return a, b


def test_bias_writes_json_html_and_png(folder, names, tmp_path, capsys):
    template = tmp_path / "template.txt"
    template.write_text(TEMPLATE + "\n", encoding="utf-8")  # the file's final newline is dropped
    outs = [tmp_path / "b.json", tmp_path / "b.html", tmp_path / "b.png"]
    argv = [
        "bias",
        "--template",
        str(template),
        "--group",
        f"A={names[0]}",
        "--group",
        f"B={names[1]}",
        "--evidence",
        "ten years of experience",
        "--target",
        "yes",
        "-m",
        str(folder),
        "--k",
        "2",
        "--controls",
        "1",
        "--pairs",
        "3",
        "--resamples",
        "300",
    ]
    assert main([*argv, *(x for o in outs for x in ("-o", str(o)))]) == 0
    printed = capsys.readouterr().out
    assert "group A minus group B" in printed and "name_attention" in printed and "not causation" in printed
    data = json.loads(outs[0].read_text(encoding="utf-8"))
    assert data["template"] == TEMPLATE and len(data["pairs"]) == 3 and data["pair_count"] == 3
    assert data["pairs"][0]["prompt_a"] == TEMPLATE.replace("{name}", data["pairs"][0]["name_a"])
    assert data["ablation"]["k"] == 2 and len(data["controls"]) == 1 and data["resamples"] == 300
    assert "<!DOCTYPE html>" in outs[1].read_text(encoding="utf-8") and outs[2].read_bytes()[:4] == b"\x89PNG"


def test_bias_errors_are_one_line(folder, names, tmp_path, capsys):
    base = [
        "bias",
        "--template",
        TEMPLATE,
        "--evidence",
        "ten years of experience",
        "--target",
        "yes",
        "-m",
        str(folder),
    ]
    cases = [
        (["--group", f"A={names[0]}"], "exactly two groups"),
        (["--group", f"A={names[0]}", "--group", f"A={names[1]}"], "given twice"),
        (["--group", f"A{names[0]}", "--group", f"B={names[1]}"], "LABEL=FILE"),
        (["--group", f"A={names[0]}", "--group", f"B={tmp_path / 'missing.txt'}"], "does not exist"),
        (["--group", f"A={names[0]}", "--group", f"B={tmp_path / 'names.csv'}"], ".txt file"),
        (["--group", f"A={names[0]}", "--group", f"B={names[1]}", "--pairs", "some"], "--pairs"),
        (
            ["--group", f"A={names[0]}", "--group", f"B={names[1]}", "-o", str(tmp_path / "x.csv")],
            "extension",
        ),
    ]
    for extra, message in cases:
        assert main([*base, *extra]) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err
    with pytest.raises(SystemExit) as exc:
        main(["bias", "--template", TEMPLATE])
    assert exc.value.code == 2


def test_console_summary_carries_the_sink_and_pairing_warnings(bert_tokenizer, names, capsys, monkeypatch):
    bare, _ = build("llama", bare_tokenizer(bert_tokenizer))  # no [CLS]: the name is the first token
    monkeypatch.setattr(headmap.cli.bias, "load_model", lambda args: bare)  # a saved folder would add [CLS]
    argv = ["bias", "-t", SINK_TEMPLATE, "-g", f"A={names[0]}", "-g", f"B={names[1]}"]
    argv += ["-e", "ten years of experience in accounting", "--target", "yes"]
    assert main([*argv, "--k", "2", "--controls", "1", "--resamples", "200"]) == 0
    printed = capsys.readouterr().out
    assert "heads that attend most to the name" not in printed and "[first-token sink]" in printed
    assert "first token of 6 of 6 prompts" in printed and "not attention to the name" in printed
    assert "not independent" in printed  # every A name with every B name
