"""Pre-tokenized input: exact ids (a chat prompt followed by answer ids) are captured as given."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import build

from headmap.capture import Encoded, capture, encode_parts
from headmap.errors import HeadmapError


def test_parts_keep_exact_ids_offsets_and_special_flags(bert_tokenizer):
    answer = bert_tokenizer("it was too big", add_special_tokens=False)["input_ids"]
    enc = encode_parts(bert_tokenizer, ["[CLS] why did it not fit? [SEP]", answer])
    prompt = bert_tokenizer("[CLS] why did it not fit? [SEP]", add_special_tokens=False)["input_ids"]
    assert list(enc.ids) == prompt + answer
    assert (
        enc.tokens.special[0]
        and enc.tokens.special[len(prompt) - 1]
        and not any(enc.tokens.special[1 : -len(answer) - 1])
    )
    for name, (a, b) in zip(enc.tokens.tokens, enc.tokens.offsets):
        if name not in ("[CLS]", "[SEP]"):
            assert enc.tokens.text[a:b].strip().lower() == name.lower()


def test_encoded_capture_matches_eager_on_those_ids(bert_tokenizer):
    fast, eager = build("llama", bert_tokenizer)
    enc = encode_parts(bert_tokenizer, ["question : where ? answer :", [2182, 2003, 1996]])
    result = capture(fast, enc)
    with torch.no_grad():
        reference = eager(input_ids=torch.tensor([enc.ids]), output_attentions=True).attentions
    assert result.source.tokens == enc.tokens.tokens
    for layer in result.layers:
        assert np.abs(layer.weights - reference[layer.key.index][0].numpy()).max() <= 1e-5


def test_encoded_and_plain_texts_in_one_batch(bert_tokenizer):
    fast, _ = build("gpt2", bert_tokenizer)
    enc = encode_parts(bert_tokenizer, ["one two three"])
    both = capture(fast, [enc, "four five"], padding_side="left")
    alone = capture(fast, enc)
    assert np.abs(both[0].layers[0].weights - alone.layers[0].weights).max() <= 1e-5


def test_empty_encoded_is_refused(bert_tokenizer):
    with pytest.raises(HeadmapError, match="no tokens"):
        Encoded((), encode_parts(bert_tokenizer, ["x"]).tokens.select([]))
