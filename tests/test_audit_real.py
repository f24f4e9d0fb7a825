"""``headmap audit`` and ``headmap verify`` on the two bundled real models (their real files hashed)."""

from __future__ import annotations

import pytest
from conftest import TROPHY

from headmap.apps.audit import audit, verify

pytestmark = pytest.mark.slow


def test_minilm_record_of_the_cosine_verifies(minilm, tmp_path):
    record = audit(
        minilm, TROPHY, compare="The cup was too large for the box.", methods="attention,rollout,occlusion"
    )
    data = record.to_dict()
    names = {f["path"].rsplit("/", 1)[-1] for f in data["provenance"]["files"]}
    assert {"model.safetensors", "tokenizer.json", "vocab.txt", "config.json"} <= names
    assert data["decision"]["target"]["kind"] == "cosine" and len(data["heads"]["effects"]) == 6
    assert data["heads"]["roles"]["texts"] == 16  # the first lines of corpora/sentences.txt
    result = verify(record.save(tmp_path / "minilm.json"))
    assert result.ok, result.report()


def test_smollm2_record_of_the_next_token_verifies(smollm2, tmp_path):
    text = "The trophy didn't fit in the suitcase because it was too"
    record = audit(smollm2, text, " big", methods="attention,input_x_gradient,occlusion", top_heads=2)
    data = record.to_dict()
    assert [f["path"].rsplit("/", 1)[-1] for f in data["provenance"]["files"]] == [
        "SmolLM2-135M-Instruct.Q4_1.gguf"
    ]
    assert data["decision"]["target"]["token"] == " big" and len(data["decision"]["alternatives"]) == 5
    assert data["summary"][0].startswith("The model predicts 'big' next with probability")
    result = verify(record.save(tmp_path / "smollm2.json"))
    assert result.ok, result.report()
