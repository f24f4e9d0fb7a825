"""Saving captured maps to safetensors and reading them back."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TROPHY
from safetensors import safe_open

from headmap import HeadmapError
from headmap.capture import capture
from headmap.storage import load_result


def test_round_trip_keeps_maps_tokens_and_offsets(minilm, tmp_path):
    result = capture(minilm, TROPHY, layers=[1, 4], heads=[0, 5])
    path = result.save(tmp_path / "run.safetensors")
    with safe_open(str(path), framework="numpy") as handle:
        assert sorted(handle.keys()) == ["layer.1", "layer.4"]
        assert handle.get_tensor("layer.4").shape == (2, len(result.source), len(result.source))
        meta = handle.metadata()
    assert meta["model"] == "minilm"
    assert json.loads(meta["source"])["tokens"][0] == "[CLS]"
    back = load_result(path)
    assert back.source == result.source
    assert back.keys == result.keys
    for a, b in zip(back.layers, result.layers):
        assert a.heads == b.heads and a.rows == b.rows
        np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_array_equal(back.head(4, 5), result.head(4, 5))


def test_encoder_decoder_names(bert_tokenizer, tmp_path):
    from tiny_models import build

    fast, _ = build("bart", bert_tokenizer)
    result = capture(fast, "Short input.", target="Kurz.")
    back = load_result(result.save(tmp_path / "ed.safetensors"))
    assert [k.name for k in back.keys] == ["encoder.0", "encoder.1", "decoder.0", "decoder.1", "cross.0", "cross.1"]
    assert back.target == result.target


def test_corrupt_and_foreign_files(tmp_path):
    corrupt = tmp_path / "bad.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(HeadmapError, match="corrupt"):
        load_result(corrupt)
    from safetensors.numpy import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": np.zeros((2, 2), np.float32)}, str(foreign))
    with pytest.raises(HeadmapError, match="not one saved by headmap"):
        load_result(foreign)
    with pytest.raises(HeadmapError, match="does not exist"):
        load_result(tmp_path / "missing.safetensors")


def test_truncated_file(minilm, tmp_path):
    path = capture(minilm, TROPHY, layers=0).save(tmp_path / "run.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(HeadmapError):
        load_result(path)
