"""``--device``, ``--dtype`` and ``--device-map`` on the commands that load a model, on a tiny random
Llama saved as a safetensors folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TROPHY
from tiny_models import build

import headmap
import headmap.models.loading
from headmap.cli import build_parser, main

#: Every command that loads a model.
LOADING = ("render", "capture", "stats", "heads", "demo", "explain", "rag", "bias", "prune", "serve")


@pytest.fixture(scope="module")
def folder(bert_tokenizer, tmp_path_factory):
    fast, _ = build("llama", bert_tokenizer)
    path = tmp_path_factory.mktemp("tiny-llama")
    fast.model.save_pretrained(path, safe_serialization=True)
    bert_tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def loaded_dtypes(monkeypatch):
    """The dtype of every model the command line loads."""
    seen: list[torch.dtype] = []
    original = headmap.models.loading.load

    def spy(*args, **kwargs):
        loaded = original(*args, **kwargs)
        seen.append(next(loaded.model.parameters()).dtype)
        return loaded

    monkeypatch.setattr(headmap.models.loading, "load", spy)
    return seen


def test_every_loading_command_documents_device_and_dtype():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in LOADING:
        text = commands[name].format_help()
        for option in ("--device ", "--dtype ", "--device-map ", "--offload-folder "):
            assert option in text, (name, option)
        assert "bfloat16" in text and "cuda:N" in text


def test_dtype_bfloat16_loads_a_bf16_model_and_runs(folder, tmp_path, capsys, loaded_dtypes):
    out = tmp_path / "bf16.safetensors"
    argv = ["capture", TROPHY, "--model", str(folder), "--dtype", "bfloat16", "-o", str(out)]
    assert main(argv) == 0
    assert loaded_dtypes == [torch.bfloat16]
    half = headmap.load_result(out)
    assert main(["capture", TROPHY, "--model", str(folder), "-o", str(tmp_path / "f32.safetensors")]) == 0
    assert loaded_dtypes == [torch.bfloat16, torch.float32]
    full = headmap.load_result(tmp_path / "f32.safetensors")
    for a, b in zip(half.layers, full.layers, strict=True):
        assert a.weights.dtype == np.float32  # maps come back in float32 whatever the model ran in
        np.testing.assert_allclose(a.weights.sum(-1), 1.0, atol=1e-3)
        assert 0 < np.abs(a.weights - b.weights).max() < 0.1  # bf16 rounding, not another model
    capsys.readouterr()
    with pytest.raises(SystemExit) as usage:  # argparse: a usage error names the choices
        main(["stats", TROPHY, "--model", str(folder), "--dtype", "int8"])
    assert usage.value.code == 2 and "'bfloat16'" in capsys.readouterr().err
    assert main(["stats", TROPHY, "--model", str(folder), "--dtype", "bfloat16", "-q"]) == 0
    assert "torch.bfloat16" in capsys.readouterr().err  # the statistics say which precision ran


def test_device_map_auto_and_cpu(folder, tmp_path, loaded_dtypes):
    for extra in (["--device", "cpu"], ["--device-map", "auto", "--offload-folder", str(tmp_path / "off")]):
        out = tmp_path / f"{extra[1]}.safetensors"
        assert main(["capture", TROPHY, "--model", str(folder), *extra, "-o", str(out)]) == 0
        assert headmap.load_result(out).layers
    assert loaded_dtypes == [torch.float32, torch.float32]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
@pytest.mark.parametrize("command", ["capture", "stats", "explain"])
def test_device_cuda_without_cuda_is_one_line_and_exit_1(folder, tmp_path, capsys, command):
    argv = [command, TROPHY, "--model", str(folder), "--device", "cuda"]
    if command == "capture":
        argv += ["-o", str(tmp_path / "x.safetensors")]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err == "headmap: error: no CUDA device: torch.cuda.is_available() is False; use --device cpu"


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--device", "cpu", "--device-map", "auto"], "not both"),
        (["--offload-folder", "x"], "give device_map too"),
        (["--device", "npu"], "unknown device"),
    ],
)
def test_placement_mistakes_are_one_line_and_exit_1(folder, tmp_path, capsys, extra, message):
    assert main(["stats", TROPHY, "--model", str(folder), *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("headmap: error:") and message in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
