"""Alignment as a result: word timings, the Alignment report and time pictures, on planted attention.

A hand-built capture of a 1 s clip (50 frames of 0.02 s, 45 audible) with a transcript of subword
tokens; one cross head walks forward through planted spans, the others are noise, so every timing
is known exactly.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import make_result, softmax_rows, tokens_from

import headmap
from headmap.analysis.align_result import Alignment, align_result
from headmap.analysis.alignment import Word, head_score, token_times, word_times
from headmap.errors import HeadmapError
from headmap.result import AttentionResult, LayerKey, LayerMap, Stack
from headmap.tokens import Frames, Tokens

SECONDS, FRAMES, AUDIBLE = 0.02, 50, 45
TEXT = "the catfish <b>sat"
# The start token, "the", "cat"+"fish" (one word), "<b>" "sat" ("<b>sat": one word), end of text.
PIECES = [(0, 0), (0, 3), (3, 7), (7, 11), (11, 15), (15, 18), (18, 18)]
SPECIAL = [True, False, False, False, False, False, True]
SPANS = [(0, 3), (3, 10), (10, 18), (18, 24), (24, 33), (33, 40), (40, 45)]  # planted frames per token
PLANTED = (1, 3)  # cross.1 head 3


def target() -> Tokens:
    tokens = tokens_from(TEXT, PIECES, SPECIAL)
    return Tokens(TEXT, ("<|sot|>", *tokens.tokens[1:-1], "<|eot|>"), tokens.offsets, tokens.special)


def walking(spans=SPANS) -> np.ndarray:
    """``[tokens, frames]`` rows, each token's weight on its own span (the padding after 45 gets little)."""
    rows = np.full((len(spans), FRAMES), 0.002)
    for t, (a, b) in enumerate(spans):
        rows[t, a:b] = 1.0
    return rows / rows.sum(axis=1, keepdims=True)


def planted(planted=PLANTED, heads=(0, 1, 2, 3)) -> AttentionResult:
    """Two cross layers of noise with the walking head planted, and a decoder layer."""
    rng = np.random.default_rng(3)
    layers = []
    for index in range(2):
        weights = rng.random((len(heads), len(SPANS), FRAMES)) + 0.5
        if index == planted[0]:
            weights[heads.index(planted[1])] = walking()
        weights /= weights.sum(axis=-1, keepdims=True)
        rows = tuple(range(len(SPANS)))
        layers.append(LayerMap(LayerKey(Stack.CROSS, index), tuple(heads), rows, weights.astype(np.float32)))
    layers.append(LayerMap(LayerKey(Stack.DECODER, 0), tuple(heads), rows, softmax_rows((len(heads), 7, 7))))
    frames = Tokens("clip.wav", tuple(f"{i * SECONDS:.2f}s" for i in range(FRAMES)), ((0, 0),) * FRAMES,
                    (False,) * FRAMES, unit="frame", frames=Frames(SECONDS, AUDIBLE))  # fmt: skip
    counts = {Stack.ENCODER: 2, Stack.DECODER: 2, Stack.CROSS: 2}
    return AttentionResult("planted-whisper", frames, tuple(layers), counts, 4, target=target())


def test_words_merge_their_tokens_spans():
    times = np.array(SPANS, dtype=float) * SECONDS
    words = word_times(target(), times)
    # "cat"+"fish" and "<b>"+"sat" are one word each; the start and end tokens are no words.
    assert words == [
        Word("the", (1,), 0.06, 0.20),
        Word("catfish", (2, 3), 0.20, 0.48),
        Word("<b>sat", (4, 5), 0.48, 0.80),
    ]
    with pytest.raises(HeadmapError, match=r"\[tokens, 2\] times for 7 tokens"):
        word_times(target(), times[:3])


def test_whitespace_words_are_skipped():
    tokens = tokens_from("a \n b", [(0, 1), (1, 3), (3, 5)])
    words = word_times(tokens, np.array([[0.0, 0.1], [0.1, 0.2], [0.2, 0.3]]))
    assert [(w.word, w.start, w.end) for w in words] == [("a", 0.0, 0.1), ("b", 0.2, 0.3)]


def test_align_finds_the_planted_head_and_its_exact_timings():
    result = planted()
    alignment = headmap.align(result, top=1)
    assert isinstance(alignment, Alignment) and alignment.found
    assert [(h.key.name, h.head) for h in alignment.heads] == [("cross.1", 3)]
    assert alignment.heads[0].score == pytest.approx(head_score(walking()[:, :AUDIBLE]))
    assert alignment.heads[0].score > 0.95
    # The raw mean of one head is that head over the audible frames.
    assert alignment.weights.shape == (7, AUDIBLE)
    assert np.allclose(alignment.weights, result.layer("cross.1").head(3)[:, :AUDIBLE])
    # Each token starts and ends exactly where it was planted.
    assert np.allclose(alignment.token_times, np.array(SPANS) * SECONDS)
    spans = [(w.word, round(w.start, 6), round(w.end, 6)) for w in alignment.words]
    assert spans == [("the", 0.06, 0.2), ("catfish", 0.2, 0.48), ("<b>sat", 0.48, 0.8)]
    assert alignment.duration == pytest.approx(AUDIBLE * SECONDS)


def test_given_heads_by_name_or_number():
    result = planted()
    by_name = align_result(result, heads=[("cross.1", 3), ("cross.0", 1)])
    by_number = headmap.align(result, heads=[(1, 3), (0, 1)])
    assert not by_name.found and by_name.to_dict() == by_number.to_dict()
    stack = np.stack([result.layer("cross.1").head(3), result.layer("cross.0").head(1)])[:, :, :AUDIBLE]
    assert np.allclose(by_name.weights, stack.mean(axis=0))
    assert np.allclose(by_name.token_times, token_times(stack, SECONDS))
    scores = [h.score for h in by_name.heads]
    assert scores == pytest.approx([head_score(stack[0]), head_score(stack[1])])


def test_top_heads_are_best_first():
    alignment = headmap.align(planted((0, 2)), top=3)
    assert (alignment.heads[0].key.name, alignment.heads[0].head) == ("cross.0", 2)
    scores = [h.score for h in alignment.heads]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)


def test_outputs_carry_every_number_and_the_caveat(tmp_path):
    alignment = headmap.align(planted(), top=1)
    data = json.loads(alignment.save(tmp_path / "a.json").read_text(encoding="utf-8"))
    assert data["warning"] == headmap.CAUSATION_WARNING and data["audible_frames"] == AUDIBLE
    assert [w["word"] for w in data["words"]] == ["the", "catfish", "<b>sat"]
    assert data["words"][1]["tokens"] == [2, 3] and data["words"][1]["start"] == pytest.approx(0.2)
    assert [t["start"] for t in data["tokens"]] == pytest.approx([a * SECONDS for a, _ in SPANS])
    assert np.allclose(np.array(data["weights"]), alignment.weights)
    table = pd.read_csv(alignment.save(tmp_path / "words.csv"), keep_default_na=False)
    assert list(table.columns) == ["word", "start", "end", "first_token", "last_token"]
    assert table["word"].tolist() == ["the", "catfish", "<b>sat"]
    assert np.allclose(table[["start", "end"]].to_numpy(), [[0.06, 0.2], [0.2, 0.48], [0.48, 0.8]])
    assert alignment.token_table()["token"].tolist()[:3] == ["<|sot|>", "the", "cat"]
    page = alignment.page()
    assert "&lt;b&gt;sat" in page and "<b>sat" not in page and "&lt;|sot|&gt;" not in page
    assert "correlation, not causation" in page and alignment._repr_html_() == page
    text = repr(alignment)
    assert "cross.1/3" in text and "catfish     0.20     0.48" in text and "causation" in text


def test_the_picture_is_the_mean_over_time_with_words_outlined():
    alignment = headmap.align(planted(), top=2)
    fig = alignment.figure()
    ax = fig.axes[0]
    assert np.allclose(ax.images[0].get_array(), alignment.weights)
    assert ax.get_xlabel() == "time (s)" and ax.images[0].get_extent()[1] == pytest.approx(AUDIBLE * SECONDS)
    boxes = [(p.get_x(), p.get_y(), p.get_width(), p.get_height()) for p in ax.patches]
    expected = [(w.start, w.tokens[0] - 0.5, w.end - w.start, len(w.tokens)) for w in alignment.words]
    assert np.allclose(boxes, expected)
    assert [t.get_text() for t in ax.texts] == ["the", "catfish", "<b>sat"]
    assert any("causation" in t.get_text() for t in fig.texts)


def test_an_audio_results_cross_layer_is_drawn_over_time(tmp_path):
    result = planted()
    over_time = result.figure("cross.1", 3).axes[0]
    assert over_time.get_xlabel() == "time (s)"
    assert np.allclose(over_time.images[0].get_array(), result.layer("cross.1").head(3)[:, :AUDIBLE])
    mean = result.figure("cross.0", None).axes[0].images[0].get_array()
    assert np.allclose(mean, result.layer("cross.0").weights.mean(axis=0)[:, :AUDIBLE])
    # The matrix of frame indices on request, and for a layer that is not cross-attention.
    assert result.figure("cross.1", 3, matrix=True).axes[0].get_xlabel() != "time (s)"
    assert result.figure("decoder.0", 0).axes[0].get_xlabel() != "time (s)"
    for ext in ("png", "svg"):
        assert result.render(tmp_path / f"c.{ext}", "cross.1", 3, cmap="magma").stat().st_size > 0
    # HTML: the same picture over time, embedded (no other file); matrix=True keeps the heatmap page.
    page = result.render(tmp_path / "c.html", "cross.1", 3).read_text(encoding="utf-8")
    assert "cross.1 cross-attention over time" in page and "data:image/png;base64," in page
    assert "not causation" in page and "http" not in page.replace("http-equiv", "")
    matrix = result.render(tmp_path / "m.html", "cross.1", 3, matrix=True).read_text(encoding="utf-8")
    assert "over time" not in matrix


def test_bad_inputs_are_one_clear_line():
    text = make_result(tokens_from("a b", [(0, 1), (2, 3)]), softmax_rows((2, 2, 2)))
    with pytest.raises(HeadmapError, match="needs a speech model's capture of a clip with a target"):
        headmap.align(text)
    result = planted()
    no_cross = AttentionResult(
        result.model, result.source, result.layers[2:], result.num_layers, 4, target=result.target
    )
    with pytest.raises(HeadmapError, match="no cross-attention captured"):
        headmap.align(no_cross)
    with pytest.raises(HeadmapError, match="decoder.0 is no cross-attention layer"):
        headmap.align(result, heads=[("decoder.0", 1)])
    with pytest.raises(HeadmapError, match="head 3 of cross.1 was not captured: give one of \\[0, 1\\]"):
        headmap.align(planted(heads=(0, 1), planted=(1, 1)), heads=[("cross.1", 3)])
    with pytest.raises(HeadmapError, match="cross layer 5 is out of range|out of range"):
        headmap.align(result, heads=[(5, 0)])
    cross = result.layers[0]
    some_rows = LayerMap(cross.key, cross.heads, (0, 1, 2), cross.weights[:, :3])
    with pytest.raises(HeadmapError, match="needs every target token's row: capture with rows=None"):
        headmap.align(
            AttentionResult(
                result.model, result.source, (some_rows,), result.num_layers, 4, target=result.target
            )
        )
    with pytest.raises(HeadmapError, match="top must be at least 1"):
        headmap.align(result, top=0)
    with pytest.raises(HeadmapError, match="a capture is aligned as it is"):
        headmap.align(result, "clip.wav")
    with pytest.raises(HeadmapError, match="needs a clip and its transcript"):
        headmap.align("minilm")
