"""Bad input gets one clear message that names the fix."""

from __future__ import annotations

import pytest
from conftest import TROPHY

from headmap import HeadmapError
from headmap.capture import capture
from headmap.models import load


def test_empty_text(minilm):
    with pytest.raises(HeadmapError, match="empty"):
        capture(minilm, "   ")


def test_layer_and_head_out_of_range_name_the_range(minilm):
    with pytest.raises(HeadmapError, match=r"0\.\.5"):
        capture(minilm, TROPHY, layers=6)
    with pytest.raises(HeadmapError, match=r"0\.\.11"):
        capture(minilm, TROPHY, heads=[12])
    with pytest.raises(HeadmapError, match="no cross layers"):
        capture(minilm, TROPHY, layers="cross.0")


def test_too_long_for_positions(minilm):
    with pytest.raises(HeadmapError, match="at most 512"):
        capture(minilm, "word " * 600)


def test_unknown_model_fails_fast(monkeypatch):
    import time

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    start = time.monotonic()
    with pytest.raises(HeadmapError, match="cannot be reached"):
        load("no-such-org/no-such-model")
    assert time.monotonic() - start < 10


def test_model_without_attention_interface(bert_tokenizer):
    import torch
    import transformers

    from headmap.models import LoadedModel

    config = transformers.MambaConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, state_size=4)
    model = transformers.MambaModel(config).eval()
    with pytest.raises(HeadmapError, match="cannot be captured"):
        capture(LoadedModel(model, bert_tokenizer, "tiny-mamba"), TROPHY)
    with pytest.raises(HeadmapError, match="not a Hugging Face"):
        capture(LoadedModel(torch.nn.Linear(2, 2), bert_tokenizer, "linear"), TROPHY)


def test_target_on_a_decoder_only_model(smollm2):
    with pytest.raises(HeadmapError, match="not an encoder-decoder"):
        capture(smollm2, TROPHY, target="x")
