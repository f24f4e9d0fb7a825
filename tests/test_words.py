"""Word view: groups from offsets, sum over a word's keys, mean over its queries."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TROPHY
from helpers import make_result, softmax_rows, tokens_from
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from headmap import HeadmapError
from headmap.encoding import encode
from headmap.words import word_groups


def test_values_by_hand():
    # "unhappy cat": tokens "un" "happy" " cat" -> words [0, 1], [2]
    tokens = tokens_from("unhappy cat", [(0, 2), (2, 7), (7, 11)])
    w = np.array([[[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]]], dtype=np.float32)
    words = make_result(tokens, w).to_words()
    got = words.layers[0].weights[0]
    # from "unhappy" = mean of rows 0 and 1; to "unhappy" = sum of keys 0 and 1
    expected = np.array([[(0.8 + 0.7) / 2, (0.2 + 0.3) / 2], [0.4, 0.6]], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-7)
    assert words.source.tokens == ("unhappy", "cat")
    assert words.source.offsets == ((0, 7), (8, 11))
    assert words.source.unit == "word"
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-6)


def test_bert_wordpiece_offsets(minilm):
    _, tokens = encode(minilm.tokenizer, TROPHY)
    groups = word_groups(tokens)
    words = [tokens.text[tokens.offsets[g[0]][0]:tokens.offsets[g[-1]][1]] if not tokens.special[g[0]] else tokens.tokens[g[0]]
             for g in groups]
    assert words[0] == "[CLS]" and words[-1] == "[SEP]"
    assert "didn't" in words and "suitcase" in words and "big." in words
    assert len(words) == len(TROPHY.split()) + 2
    split = word_groups(tokens, split_punctuation=True)
    assert len(split) > len(groups)  # "didn ' t" and "big ." come apart


def test_byte_level_bpe_offsets_include_the_space():
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(["the cat sat on the mat", "a trophy and a suitcase"] * 5, trainer)
    text = "The trophy didn't fit in the suitcase"
    enc = bpe.encode(text)
    assert any(text[a:b].startswith(" ") for a, b in enc.offsets)  # GPT-2 style: the space is inside
    assert len(enc.offsets) > len(text.split())  # words really are split into pieces
    tokens = tokens_from(text, [tuple(o) for o in enc.offsets])
    groups = word_groups(tokens)
    assert [text[tokens.offsets[g[0]][0]:tokens.offsets[g[-1]][1]].strip() for g in groups] == text.split()


def test_smollm2_words_keep_rows_stochastic(smollm2):
    from headmap.capture import capture

    result = capture(smollm2, TROPHY, layers=[5]).to_words()
    assert result.source.tokens[:4] == ("The", "trophy", "didn't", "fit")
    np.testing.assert_allclose(result.layers[0].weights.sum(-1), 1.0, atol=1e-5)


def test_random_maps_sum_and_mean():
    text = "aa bb cc dd"
    tokens = tokens_from(text, [(0, 1), (1, 2), (3, 4), (4, 5), (6, 8), (9, 11)])
    w = softmax_rows((3, 6, 6))
    words = make_result(tokens, w).to_words().layers[0].weights
    groups = [[0, 1], [2, 3], [4], [5]]
    for qi, qg in enumerate(groups):
        for ki, kg in enumerate(groups):
            expected = w[:, qg][:, :, kg].sum(-1).mean(-1)
            np.testing.assert_allclose(words[:, qi, ki], expected, atol=1e-6)


def test_selected_rows_and_errors():
    tokens = tokens_from("unhappy cat", [(0, 2), (2, 7), (7, 11)])
    w = softmax_rows((1, 1, 3))
    words = make_result(tokens, w, rows=(1,)).to_words()
    assert words.layers[0].rows == (0,)
    np.testing.assert_allclose(words.layers[0].weights[0, 0], [w[0, 0, 0] + w[0, 0, 1], w[0, 0, 2]], atol=1e-7)
    with pytest.raises(HeadmapError, match="already"):
        words.to_words()


def test_input_is_not_modified():
    tokens = tokens_from("unhappy cat", [(0, 2), (2, 7), (7, 11)])
    w = softmax_rows((2, 3, 3))
    result = make_result(tokens, w.copy())
    result.to_words()
    np.testing.assert_array_equal(result.layers[0].weights, w)
