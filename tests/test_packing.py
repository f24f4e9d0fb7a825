"""Packed batches: every text of a packed forward gets exactly what it gets alone and padded.

For every family of the parity tests (causal, bidirectional, sliding windows, softcaps, shared
layers, torch-SDPA models; Gemma 3's mix of sliding and full layers), through the compiled kernel and
through the torch kernel: maps, statistics and the notes that say how each layer was computed.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import transformers
from conftest import TROPHY
from tiny_models import CONFIGS, PATHS, VOCAB, build

from headmap import capture, head_report
from headmap.analysis.compute import stats_partial, token_counts
from headmap.analysis.corpus import corpus_from_texts
from headmap.analysis.diversity import js_row_sums
from headmap.analysis.partials import ReportSpec, unpack_upper
from headmap.analysis.row_sums import STATS, moment_sums, text_sums
from headmap.analysis.stats import collect_stats
from headmap.capture import native
from headmap.capture.moments import MOMENT_FIELDS, RowMoments
from headmap.models import LoadedModel

TOL = 1e-5
TEXTS = [
    TROPHY,
    "Hi there.",
    "Attention is correlation, not causation, so read every map with care.",
    "A fourth text, to fill the batch.",
]
PACKABLE = sorted(
    n for n in CONFIGS if PATHS.get(n, "dispatch") != "eager-weights" and n not in ("t5", "bart")
)
REFUSED = {
    "t5": "encoder-decoder",
    "bart": "encoder-decoder",
    "bloom": "eager-only attention",
    "deberta_v2": "eager-only attention",
}


@pytest.fixture(params=["compiled", "torch"])
def kernel(request, monkeypatch):
    """Each test runs through the compiled kernel (built here if need be) and the torch one."""
    if request.param == "torch":
        monkeypatch.setenv("HEADMAP_NATIVE", "0")
    elif native.module() is None:
        pytest.skip(f"no compiled kernel: {native.unavailable()}")
    return request.param


def gemma3(tokenizer) -> LoadedModel:
    """A tiny Gemma 3: sliding layers (window 4, shorter than the texts) around a full one."""
    config = transformers.Gemma3TextConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        max_position_embeddings=256,
    )
    torch.manual_seed(0)
    model = transformers.Gemma3ForCausalLM(copy.deepcopy(config)).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 2:
                param.normal_(0.0, 0.3)
    return LoadedModel(model=model, tokenizer=tokenizer, name="tiny-gemma3")


def model_of(name: str, tokenizer) -> LoadedModel:
    return gemma3(tokenizer) if name == "gemma3" else build(name, tokenizer)[0]


def assert_stats_equal(got, expected):
    for a, b in zip(got, expected, strict=True):
        for name in STATS:
            np.testing.assert_allclose(a.stat(name), b.stat(name), atol=TOL, rtol=TOL, err_msg=name)


@pytest.mark.parametrize("name", [*PACKABLE, "gemma3"])
def test_packed_maps_and_statistics_equal_each_text_alone(name, kernel, bert_tokenizer):
    model = model_of(name, bert_tokenizer)
    packed = capture(model, TEXTS, pack=True)
    alone = [capture(model, t) for t in TEXTS]
    for p, a in zip(packed, alone, strict=True):
        for lp, la in zip(p.layers, a.layers, strict=True):
            np.testing.assert_allclose(lp.weights, la.weights, atol=TOL, err_msg=f"{name} {lp.key.name}")
    assert any(n.startswith("packed batches") for n in packed[0].notes), packed[0].notes
    stats = collect_stats(model, TEXTS, pack=True)  # by default only where the compiled kernel is
    assert_stats_equal(stats, [collect_stats(model, t) for t in TEXTS])
    assert_stats_equal(stats, collect_stats(model, TEXTS, fused=False, pack=False))  # the padded exact path
    notes = " ".join(stats[0].notes)
    assert "packed batches" in notes
    which = "compiled fused kernel" if kernel == "compiled" else "fused kernel in torch"
    assert f"{which} (each layer's attention output and statistics in one pass): all" in notes, notes
    assert "exact recomputation" not in notes  # masks, windows and softcaps are all served


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_families_that_cannot_pack_run_padded_and_say_why(name, bert_tokenizer):
    model = model_of(name, bert_tokenizer)
    stats = collect_stats(model, TEXTS)
    note = next(n for n in stats[0].notes if "padded" in n)
    assert note.startswith("batches run padded, not packed:") and REFUSED[name] in note, note
    assert_stats_equal(stats, [collect_stats(model, t) for t in TEXTS])


def test_statistics_pack_by_default_only_where_it_pays(bert_tokenizer, monkeypatch):
    model = build("llama", bert_tokenizer)[0]
    if native.module() is not None:
        assert any(n.startswith("packed batches") for n in collect_stats(model, TEXTS)[0].notes)
    monkeypatch.setenv("HEADMAP_NATIVE", "0")
    notes = " ".join(collect_stats(model, TEXTS)[0].notes)
    assert (
        "batches run padded, not packed: on a CPU without the compiled kernel (HEADMAP_NATIVE=0), "
        "a padded batch is faster"
    ) in notes, notes


def test_a_model_in_bfloat16_runs_padded_and_says_why(bert_tokenizer):
    model = build("llama", bert_tokenizer)[0]
    model.model.to(torch.bfloat16)
    notes = " ".join(collect_stats(model, TEXTS[:2])[0].notes)
    assert "batches run padded, not packed: the model runs in torch.bfloat16" in notes, notes


def test_exact_path_notes_give_the_real_reason(bert_tokenizer, monkeypatch):
    t5 = build("t5", bert_tokenizer)[0]
    notes = " ".join(collect_stats(t5, TROPHY).notes)
    assert "own kernel: all 6 layers (the layer adds a position bias (T5-style)" in notes, notes
    monkeypatch.setenv("HEADMAP_NATIVE", "0")
    llama = build("llama", bert_tokenizer)[0]
    notes = " ".join(collect_stats(llama, TROPHY).notes)
    assert (
        "exact recomputation after the model's own kernel: all 2 layers (the compiled kernel is "
        "unavailable (HEADMAP_NATIVE=0); and on a CPU the torch kernel is slower than recomputing below "
        "4,096 tokens)"
    ) in notes, notes


def test_sliding_layers_with_a_mask_take_the_compiled_kernel(bert_tokenizer):
    """Gemma 3 hands its sliding layers a mask tensor; the compiled kernel serves them (it fell back
    to the exact path before, with a note that blamed short texts)."""
    if native.module() is None:
        pytest.skip(f"no compiled kernel: {native.unavailable()}")
    model = gemma3(bert_tokenizer)
    long_text = " ".join([TROPHY] * 4)  # past the window of 4 many times over
    fused = collect_stats(model, long_text)
    assert any(n.startswith("statistics: compiled fused kernel") and "all 3 layers" in n for n in fused.notes)
    assert_stats_equal([fused], [collect_stats(model, long_text, fused=False)])


def test_text_sums_equal_the_per_text_sums():
    """The packed reduction (all texts' rows at once) adds up what each text's own reduction does."""
    g = torch.Generator().manual_seed(0)
    heads, lengths = 3, [5, 1, 7]
    parts, specials = [], []
    for n in lengths:
        rows = torch.arange(n)
        fields = {f: torch.rand(heads, n, generator=g, dtype=torch.float64) for f in MOMENT_FIELDS}
        fields["p_prev"][:, 0] = float("nan")  # the first token has no previous one
        fields["p_next"][:, -1] = float("nan")
        parts.append(RowMoments(rows=rows, visible=rows + 1, **fields))
        specials.append(torch.arange(n) == 0 if n > 1 else torch.ones(1, dtype=torch.bool))
    joined = RowMoments(
        rows=torch.cat([m.rows for m in parts]),
        visible=torch.cat([m.visible for m in parts]),
        **{f: torch.cat([getattr(m, f) for m in parts], dim=1) for f in MOMENT_FIELDS},
    )
    text_of_row = torch.repeat_interleave(torch.arange(3), torch.tensor(lengths))
    sums, counts = text_sums(joined, text_of_row, 3, torch.cat(specials))
    for t, m in enumerate(parts):
        own = moment_sums(m, False, specials[t])
        for j, name in enumerate(STATS):
            np.testing.assert_allclose(sums[t, j], own[name][0], atol=1e-12, err_msg=name)
            assert counts[t, j] == own[name][1], name
        defined = ~m.p_next[0].isnan()
        np.testing.assert_allclose(sums[t, -1], m.p_next[:, defined].sum(1).numpy(), atol=1e-12)


@pytest.mark.parametrize("name", ["llama", "bert", "gemma2"])
def test_packed_head_distances_equal_each_text_alone(name, kernel, bert_tokenizer):
    """A corpus group's head distances (from the packed kernel's maps, or blocks without it) equal
    the sum over texts of the distances of each text's own maps."""
    model = model_of(name, bert_tokenizer)
    texts = corpus_from_texts(TEXTS)
    spec = ReportSpec(model.name, ("layer.0", "layer.1"), (0, 1, 2, 3))
    partial = stats_partial(model, texts, spec, token_counts(model, texts))
    expected = np.zeros((spec.n_heads, spec.n_heads))
    for text in TEXTS:
        maps = np.concatenate([layer.weights for layer in capture(model, text).layers])  # [layer*head, n, n]
        expected += js_row_sums(torch.from_numpy(maps))
    np.testing.assert_allclose(unpack_upper(partial.js, spec.n_heads), expected, atol=TOL)
    alone = [stats_partial(model, [t], spec, token_counts(model, [t])) for t in texts]
    np.testing.assert_allclose(sum(unpack_upper(a.js, spec.n_heads) for a in alone), expected, atol=TOL)
    alone = sum(a.sums for a in alone)
    np.testing.assert_allclose(partial.sums.sum(0), alone.sum(0), atol=TOL, rtol=TOL)


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["minilm", "smollm2"])
def test_real_models_packed_report_equals_the_padded_exact_path(model_name, request):
    """The bundled models on texts of mixed lengths: statistics and head distances, packed through the
    compiled kernel, equal the padded exact path's (and the distances of each text's own maps)."""
    if native.module() is None:
        pytest.skip(f"no compiled kernel: {native.unavailable()}")
    model = request.getfixturevalue(model_name)
    with open("corpora/mixed.txt", encoding="utf-8") as handle:
        lines = [line for line in handle.read().splitlines() if line][:6]
    layers = ["layer.0", "layer.3"]
    packed = collect_stats(model, lines, layers=layers)
    assert any(n.startswith("packed batches") for n in packed[0].notes)
    assert_stats_equal(packed, collect_stats(model, lines, layers=layers, fused=False, pack=False))
    texts = corpus_from_texts(lines)
    spec = ReportSpec(model.name, tuple(layers), tuple(range(6)))
    partial = stats_partial(model, texts, spec, token_counts(model, texts))
    expected = np.zeros((spec.n_heads, spec.n_heads))
    for text in lines:
        found = capture(model, text, layers=layers, heads=list(range(6)))
        expected += js_row_sums(torch.from_numpy(np.concatenate([layer.weights for layer in found.layers])))
    np.testing.assert_allclose(unpack_upper(partial.js, spec.n_heads), expected, rtol=TOL, atol=TOL)


def test_corpus_reports_say_how_their_groups_were_computed(bert_tokenizer, tmp_path):
    """A corpus report's notes say how its groups ran (packed or padded, which kernel served which
    layers and why), also when it is resumed from the partials kept on disk."""
    if native.module() is None:
        pytest.skip(f"no compiled kernel: {native.unavailable()}")
    model = build("llama", bert_tokenizer)[0]
    report = head_report(model, TEXTS, out=tmp_path / "r")
    expected = [
        "packed batches: each batch's texts run as one unpadded sequence, each text confined to its own keys",
        "statistics: compiled fused kernel (each layer's attention output and statistics in one pass): "
        "all 2 layers (packed batch)",
    ]
    assert all(note in report.notes for note in expected), report.notes
    resumed = head_report(model, TEXTS, out=tmp_path / "r")  # every group read back from disk
    assert all(note in resumed.notes for note in expected), resumed.notes
    t5 = build("t5", bert_tokenizer)[0]
    notes = " ".join(head_report(t5, TEXTS, layers=["encoder.0", "encoder.1"]).notes)
    assert "batches run padded, not packed: an encoder-decoder model" in notes, notes
    assert (
        "exact recomputation after the model's own kernel: all 2 layers (head distances need every" in notes
    )
