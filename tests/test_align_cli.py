"""``headmap align`` and ``headmap render --audio`` on a tiny random Whisper saved as a model folder.

The folder holds the model, a WhisperFeatureExtractor with a 1 s window and the test tokenizer, as
``save_pretrained`` writes them; every printed number is checked against the Python API's.
"""

from __future__ import annotations

import copy
import json
import re

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import transformers
from test_audio import CONFIG, tone, write_wav
from tiny_models import twins

import headmap
from headmap.cli import main

TARGET = "the catfish sat"


@pytest.fixture(scope="module")
def folder(bert_tokenizer, tmp_path_factory):
    """A saved tiny Whisper (random weights) with its feature extractor and tokenizer."""
    config = copy.deepcopy(CONFIG)
    config.vocab_size = len(bert_tokenizer)
    fast, _ = twins(transformers.AutoModelForSpeechSeq2Seq, config, 0.3)
    path = tmp_path_factory.mktemp("whisper") / "tiny-whisper"
    fast.save_pretrained(path)
    bert_tokenizer.save_pretrained(path)
    transformers.WhisperFeatureExtractor(feature_size=80, chunk_length=1).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_wav(tmp_path_factory.mktemp("clip") / "clip.wav", tone(0.6), 16000)


def test_align_prints_heads_and_words_as_the_api_computes_them(folder, clip, tmp_path, capsys):
    outputs = [tmp_path / f"words.{ext}" for ext in ("csv", "json", "html", "png")]
    argv = ["align", "--audio", str(clip), "--model", str(folder), "--target", TARGET, "--top", "3"]
    assert main([*argv, *(x for o in outputs for x in ("-o", str(o)))]) == 0
    out = capsys.readouterr().out
    expected = headmap.align(headmap.load(str(folder)), clip, TARGET, top=3)
    heads = re.findall(r"^  (cross\.\d+)/(\d+)  (\S+)$", out, re.M)
    assert [(k, int(h)) for k, h, _ in heads] == [(h.key.name, h.head) for h in expected.heads]
    assert [float(s) for _, _, s in heads] == pytest.approx([h.score for h in expected.heads], abs=5e-4)
    words = re.findall(r"^  (\S+)\s+(\d+\.\d\d)\s+(\d+\.\d\d)$", out, re.M)
    # The test tokenizer splits "catfish" into "cat" "##fish": one word, as Whisper merges them.
    assert [w for w, _, _ in words] == ["the", "catfish", "sat"] == [w.word for w in expected.words]
    printed = [float(x) for _, a, b in words for x in (a, b)]
    assert printed == pytest.approx([x for w in expected.words for x in (w.start, w.end)], abs=0.005)
    assert "0.60 s audible" in out and "causation" in out
    table = pd.read_csv(outputs[0])
    assert table["word"].tolist() == ["the", "catfish", "sat"]
    assert np.allclose(table[["start", "end"]].to_numpy(), [(w.start, w.end) for w in expected.words])
    assert json.loads(outputs[1].read_text(encoding="utf-8")) == expected.to_dict()
    assert "catfish" in outputs[2].read_text(encoding="utf-8")
    assert outputs[3].read_bytes().startswith(b"\x89PNG")


def test_align_given_heads(folder, clip, capsys):
    argv = [
        "align",
        "--audio",
        str(clip),
        "-m",
        str(folder),
        "--target",
        TARGET,
        "--heads",
        "cross.1/2,cross.0/0",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "given heads" in out and re.findall(r"^  (cross\.\d/\d)  ", out, re.M) == [
        "cross.1/2",
        "cross.0/0",
    ]


def test_render_a_cross_layer_over_time_and_the_alignment(folder, clip, tmp_path, capsys):
    base = ["render", "--audio", str(clip), "-m", str(folder), "--target", TARGET]
    over_time, matrix, aligned = tmp_path / "time.png", tmp_path / "matrix.png", tmp_path / "align.png"
    assert main([*base, "--layer", "cross.1", "--head", "2", "-o", str(over_time)]) == 0
    assert main([*base, "--layer", "cross.1", "--head", "2", "--matrix", "-o", str(matrix)]) == 0
    assert main([*base, "--align", "2", "-o", str(aligned)]) == 0
    saved = tmp_path / "clip.safetensors"
    assert (
        main(["capture", "--audio", str(clip), "-m", str(folder), "--target", TARGET, "-o", str(saved)]) == 0
    )
    assert main(["plot", str(saved), "--align", "2", "-o", str(tmp_path / "again.png")]) == 0
    out = capsys.readouterr().out
    drawn = re.findall(r"\(alignment: mean of (.*); 3 words\)", out)
    assert len(drawn) == 2 and drawn[0] == drawn[1]  # the saved capture aligns as the live one
    # The command draws what result.render draws for a cross layer of a clip: the time picture.
    result = headmap.capture(headmap.load(str(folder)), clip, target=TARGET, layers="cross.1")
    direct = tmp_path / "direct.png"
    result.render(direct, "cross.1", 2)
    assert np.array_equal(matplotlib.image.imread(over_time), matplotlib.image.imread(direct))
    assert not np.array_equal(matplotlib.image.imread(matrix), matplotlib.image.imread(direct))


@pytest.mark.slow  # loads the bundled MiniLM, a text model
def test_bad_inputs_exit_1_with_one_line(folder, clip, tmp_path, capsys):
    slow = write_wav(tmp_path / "slow.wav", tone(0.5, 8000), 8000)
    cases = [
        (["--audio", str(slow), "-m", str(folder), "--target", "a"], "takes 16000 Hz: resample"),
        (["--audio", str(clip), "-m", "minilm", "--target", "a"], "is no speech model"),
        (
            ["--audio", str(tmp_path / "none.wav"), "-m", str(folder), "--target", "a"],
            "none.wav does not exist",
        ),
        (["--audio", str(clip), "-m", str(folder), "--target", " "], "--target is empty"),
        (
            ["--audio", str(clip), "-m", str(folder), "--target", "a", "--heads", "cross.1"],
            "LAYER/HEAD pairs",
        ),
        (
            ["--audio", str(clip), "-m", str(folder), "--target", "a", "-o", str(tmp_path / "x.txt")],
            "unknown output",
        ),
    ]
    for argv, message in cases:
        assert main(["align", *argv]) == 1, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert main(["render", "the cat", "--align", "-o", str(tmp_path / "a.png")]) == 1
    assert "give --audio CLIP and --target TEXT" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["align", "--audio", str(clip), "-m", str(folder)])
    assert usage.value.code == 2
