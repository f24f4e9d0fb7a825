"""Saving captured maps to safetensors and reading them back."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TROPHY
from helpers import make_result, softmax_rows, tokens_from
from safetensors import safe_open
from safetensors.numpy import save_file

from headmap import HeadmapError, Normalization
from headmap.capture import capture
from headmap.normalization import Renorm, Threshold, TopK, Window
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
    assert [k.name for k in back.keys] == [
        "encoder.0",
        "encoder.1",
        "decoder.0",
        "decoder.1",
        "cross.0",
        "cross.1",
    ]
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


def test_float16_and_topk_storage_state_their_loss(smollm2, tmp_path):
    text = " ".join([TROPHY] * 6)
    result = capture(smollm2, text, layers=[2, 20])
    full = result.save(tmp_path / "full.safetensors").stat().st_size
    half_path = result.save(tmp_path / "half.safetensors", precision="float16")
    assert half_path.stat().st_size < 0.55 * full
    half = load_result(half_path)
    err = max(np.abs(a.weights - b.weights).max() for a, b in zip(half.layers, result.layers))
    assert 0 < err <= 2**-11
    assert any("float16" in n and "max abs error" in n for n in half.notes)

    sparse_path = result.save(tmp_path / "top8.safetensors", topk=8)
    assert sparse_path.stat().st_size < 0.25 * full
    sparse = load_result(sparse_path)
    for a, b in zip(sparse.layers, result.layers):
        assert ((a.weights > 0).sum(-1) <= 8).all()
        top = np.sort(b.weights, axis=-1)[..., -8:]
        np.testing.assert_allclose(np.sort(a.weights, axis=-1)[..., -8:], top, atol=1e-7)
    with safe_open(str(sparse_path), framework="numpy") as handle:
        storage = json.loads(handle.metadata()["storage"])
    dropped = storage["loss"]["layer.2"]["max_dropped_mass"]
    assert dropped == pytest.approx(
        float((1 - np.sort(result.layer(2).weights, -1)[..., -8:].sum(-1)).max()), abs=1e-5
    )
    assert any("top-8" in n for n in sparse.notes)


def test_normalization_round_trips_as_a_value_and_old_captions_load(tmp_path):
    """The file stores the caption (as before); loading parses it back into the same record."""
    tokens = tokens_from("a b c d", [(0, 1), (2, 3), (4, 5), (6, 7)])
    result = make_result(tokens, softmax_rows((2, 4, 4), seed=1)).normalize("topk:2,renorm,threshold:0.25")
    path = result.save(tmp_path / "norm.safetensors")
    with safe_open(str(path), framework="numpy") as handle:
        meta = handle.metadata()
        arrays = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    assert meta["normalization"] == "top-2 per row, then rows renormalized, then weights ≥ 0.25"
    back = load_result(path)
    assert back.normalization == result.normalization
    assert back.normalization.steps == (TopK(2), Renorm(), Threshold(0.25))
    # A file written before the record existed holds only caption text, including a chained window.
    old = tmp_path / "old.safetensors"
    save_file(
        arrays,
        str(old),
        metadata={**meta, "normalization": "window ±1 around the query, then rows renormalized"},
    )
    assert load_result(old).normalization == Normalization((Window(1), Renorm()))
    assert load_result(old).normalization.caption == "window ±1 around the query, then rows renormalized"
    del meta["normalization"]  # the oldest files: no key at all
    save_file(arrays, str(old), metadata=meta)
    assert load_result(old).normalization.is_raw
    save_file(arrays, str(old), metadata={**meta, "normalization": "sharpened"})
    with pytest.raises(HeadmapError, match="damaged headmap metadata.*sharpened"):
        load_result(old)
