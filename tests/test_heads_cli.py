"""``headmap heads`` on the bundled models and the shipped corpora, and its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import headmap.analysis.engines as engines_module  # corpus jobs call stats_partial there
from headmap.cli import main

CORPORA = Path(__file__).resolve().parent.parent / "corpora"


@pytest.mark.slow
def test_minilm_report_on_the_heldout_corpus(tmp_path, capsys, minilm):
    out = tmp_path / "minilm"
    assert main(["heads", str(CORPORA / "heldout.txt"), "--model", "minilm", "--out", str(out), "-q"]) == 0
    table = pd.read_csv(out / "heads.csv")
    assert len(table) == 6 * 12 and (table["n_texts"] == 60).all()
    # [CLS] is the first token and a special one: its share is part of the special-token share.
    assert (table["special_share"] >= table["first_share"] - 1e-9).all()
    assert set(table["role"]) <= {
        "previous-token",
        "next-token",
        "diagonal",
        "first-token sink",
        "special-token",
        "broad",
        "local",
        "mixed",
    }
    distances = pd.read_csv(out / "distances.csv", index_col=0)
    assert distances.shape == (72, 72) and distances.index[0] == "layer.0/head.0"
    printed = capsys.readouterr().out
    assert "72 heads over 60 texts" in printed


@pytest.mark.slow
def test_smollm2_report_with_importance(tmp_path, smollm2):
    out = tmp_path / "smollm2"
    code = main(
        [
            "heads",
            str(CORPORA / "sentences.txt"),
            "--model",
            "smollm2",
            "--out",
            str(out),
            "--max-texts",
            "8",
            "--layers",
            "0,14,29",
            "--importance",
            "-q",
        ]
    )
    assert code == 0
    table = pd.read_csv(out / "heads.csv")
    assert list(table["layer"].unique()) == ["layer.0", "layer.14", "layer.29"]
    assert (table["n_texts"] == 8).all() and np.isfinite(table["importance"]).all()
    norms = table.groupby("layer")["importance_norm"].apply(lambda v: float(np.sqrt((v**2).sum())))
    np.testing.assert_allclose(norms.to_numpy(), 1.0, rtol=1e-9)
    # Without a BOS token SmolLM2 has no special token in plain text: the special share is 0.
    assert (table["special_share"] == 0).all()
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "next-token cross-entropy" in page and "correlation, not causation" in page


def test_bad_corpus_line_is_one_message(tmp_path, capsys):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "fine"}\n{"text": "fine"}\n{"txt": "oops"}\n', encoding="utf-8")
    assert main(["heads", str(corpus), "--model", "minilm", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err
        == 'headmap: error: c.jsonl:3: no "text" field; each line must be an object such as {"text": "..."}'
    )
    assert main(["heads", str(corpus), "--out", str(tmp_path / "r"), "--batch-size", "0"]) == 1
    with pytest.raises(SystemExit) as exit_:
        main(["heads", str(corpus)])  # --out is required: a usage error
    assert exit_.value.code == 2


@pytest.mark.slow
def test_ctrl_c_keeps_finished_texts_and_says_how_to_go_on(tmp_path, capsys, monkeypatch, minilm):
    corpus = tmp_path / "c.txt"
    corpus.write_text(
        "\n".join((CORPORA / "heldout.txt").read_text(encoding="utf-8").splitlines()[:12]), encoding="utf-8"
    )
    original, calls = engines_module.stats_partial, []

    def interrupted(*args, **kwargs):  # type: ignore[no-untyped-def]
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(engines_module, "stats_partial", interrupted)
    out = tmp_path / "r"
    args = [
        "heads",
        str(corpus),
        "--model",
        "minilm",
        "--out",
        str(out),
        "--batch-size",
        "4",
        "--layers",
        "0,1",
        "--no-diversity",
        "-q",
    ]
    assert main(args) == 130
    assert "rerun the same command to continue" in capsys.readouterr().err
    assert [p.name for p in (out / "partials").iterdir()] == ["stats-0000000-0000003.safetensors"]
    monkeypatch.setattr(engines_module, "stats_partial", original)
    assert main(args) == 0
    assert (pd.read_csv(out / "heads.csv")["n_texts"] == 12).all()
