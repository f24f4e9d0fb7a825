"""Streamed statistics equal the same statistics computed from full eager maps."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TROPHY
from test_parity import eager_maps
from tiny_models import build

from headmap.analysis.stats import STATS, collect_stats
from headmap.capture import fused as fused_module
from headmap.result import Stack

TOL = 1e-5
LONG = " ".join([TROPHY] * 4)


def reference_stats(
    w: np.ndarray, rows: np.ndarray, special_keys: np.ndarray, special_rows: np.ndarray, cross: bool = False
) -> dict[str, np.ndarray]:
    """Textbook definitions over full ``[head, row, key]`` maps, written without any streaming trick."""
    w = w.astype(np.float64)
    plogp = np.where(w > 0, w * np.log(np.where(w > 0, w, 1.0)), 0.0)
    entropy_rows = -plogp.sum(-1)
    visible = (w > 0).sum(-1).max(0)  # keys a row may see (weights are > 0 wherever visible here)
    broad = visible > 1
    keys = np.arange(w.shape[-1])
    out = {
        "entropy": entropy_rows.mean(1),
        "entropy_norm": (entropy_rows[:, broad] / np.log(visible[broad])).mean(1),
        "first_share": w[:, :, 0].mean(1),
        "special_share": w[:, :, special_keys].sum(-1).mean(1),
        "confidence": w.max(-1)[:, ~special_rows].mean(1),
    }
    if cross:
        out.update({k: np.full(w.shape[0], np.nan) for k in ("distance", "prev_share", "diag_share")})
    else:
        out["distance"] = (w * np.abs(rows[:, None] - keys[None, :])).sum(-1).mean(1)
        out["diag_share"] = w[:, np.arange(len(rows)), rows].mean(1)
        ok = rows >= 1
        out["prev_share"] = w[:, np.arange(len(rows))[ok], rows[ok] - 1].mean(1)
    return out


def check(stats, reference_layers: dict[str, list], source, target=None) -> None:
    for li, key in enumerate(stats.layers):
        w = reference_layers[key.stack.value][key.index][0].numpy()
        q_tokens = target if key.stack in (Stack.DECODER, Stack.CROSS) else source
        k_tokens = target if key.stack is Stack.DECODER else source
        ref = reference_stats(
            w,
            np.arange(w.shape[1]),
            np.array(k_tokens.special),
            np.array(q_tokens.special),
            cross=key.stack is Stack.CROSS,
        )
        for name in STATS:
            np.testing.assert_allclose(
                stats.stat(name)[li], ref[name], atol=TOL, rtol=0, err_msg=f"{key.name} {name}"
            )


@pytest.mark.parametrize("arch", ["bert", "llama", "mistral", "gemma2", "gpt2", "t5"])
def test_stats_match_eager_maps(arch, bert_tokenizer):
    fast, eager = build(arch, bert_tokenizer)
    stats = collect_stats(fast, TROPHY, block_bytes=4096)  # tiny blocks: many blocks per layer
    reference = eager_maps(eager, bert_tokenizer, TROPHY)
    result_tokens = __import__("headmap.capture", fromlist=["capture"]).capture(fast, TROPHY, layers=0)
    check(stats, reference, result_tokens.source, result_tokens.target)


def test_real_models_stats_match_eager(minilm, smollm2):
    from transformers import AutoModel, AutoModelForCausalLM

    from headmap.capture import capture

    for loaded, cls in ((minilm, AutoModel), (smollm2, AutoModelForCausalLM)):
        eager = cls.from_pretrained(
            loaded.model.name_or_path, attn_implementation="eager", use_safetensors=True
        ).eval()
        stats = collect_stats(loaded, LONG, block_bytes=1 << 16)
        check(stats, eager_maps(eager, loaded.tokenizer, LONG), capture(loaded, LONG, layers=0).source)


def test_overview_is_head_mean_max_pooled(smollm2):
    from headmap.capture import capture

    stats = collect_stats(smollm2, LONG, layers=[3], overview_size=16)
    mean = capture(smollm2, LONG, layers=[3]).layer(3).weights.mean(0)
    cr, ck = stats.overview_cell
    n = mean.shape[0]
    padded = np.zeros((-(-n // cr) * cr, -(-n // ck) * ck), np.float32)
    padded[:n, :n] = mean
    expected = padded.reshape(padded.shape[0] // cr, cr, padded.shape[1] // ck, ck).max((1, 3))
    np.testing.assert_allclose(stats.overview[0], expected, atol=1e-6)
    assert stats.overview.shape[1] <= 16 and np.isclose(stats.overview.max(), mean.max(), atol=1e-6)


def test_stats_files(minilm, tmp_path):
    import csv
    import json

    stats = collect_stats(minilm, TROPHY, layers=[0, 5])
    rows = list(csv.DictReader(stats.save(tmp_path / "s.csv").open()))
    assert len(rows) == 2 * 12 and rows[0]["layer"] == "layer.0"
    assert float(rows[0]["entropy"]) == pytest.approx(stats.entropy[0, 0])
    data = json.loads(stats.save(tmp_path / "s.json").read_text())
    assert "not causation" in data["warning"] and len(data["heads"]) == 24


@pytest.mark.parametrize("arch", ["bert", "llama", "t5", "bloom"])
def test_fused_and_exact_statistics_agree(arch, bert_tokenizer, monkeypatch):
    monkeypatch.setattr(fused_module, "TORCH_MIN_TOKENS", 0)  # the torch kernel, on short texts too
    monkeypatch.setenv("HEADMAP_NATIVE", "0")
    fast, _ = build(arch, bert_tokenizer)
    texts = [TROPHY, "Hi there, how are you?"]
    fused = collect_stats(fast, texts, padding_side="left", overview_size=256)
    exact = collect_stats(fast, texts, padding_side="left", fused=False, overview_size=256)
    for a, b in zip(fused, exact):
        for name in STATS:
            np.testing.assert_allclose(a.stat(name), b.stat(name), atol=TOL, rtol=TOL, err_msg=name)
        np.testing.assert_allclose(a.overview, b.overview, atol=1e-6)
    note = " ".join(fused[0].notes)
    assert ("from the model's own weights" in note) if arch == "bloom" else ("fused kernel" in note)


def test_short_texts_on_a_cpu_take_the_faster_path_and_say_so(bert_tokenizer, monkeypatch):
    """Without the compiled kernel, recomputing after the model's kernel beats the torch kernel on
    short texts (measured), so statistics take the exact path there, and the notes say which."""
    monkeypatch.setenv("HEADMAP_NATIVE", "0")
    fast, _ = build("llama", bert_tokenizer)
    short = collect_stats(fast, TROPHY)
    assert any("exact recomputation" in n for n in short.notes), short.notes
    monkeypatch.setattr(fused_module, "TORCH_MIN_TOKENS", 8)
    fused = collect_stats(fast, TROPHY)
    assert any("fused kernel in torch" in n for n in fused.notes), fused.notes
    for name in STATS:
        np.testing.assert_allclose(fused.stat(name), short.stat(name), atol=TOL, rtol=TOL, err_msg=name)


def test_stats_print_is_a_short_summary_and_the_table_has_every_statistic(minilm):
    stats = collect_stats(minilm, TROPHY, layers=[0, 5])
    text = repr(stats)
    assert str(stats) == text and len(text.splitlines()) <= 6 and "array(" not in text
    assert "2 layers x 12 heads" in text and "entropy" in text and "layer.0/" in text
    frame = stats.to_pandas()
    assert len(frame) == 2 * 12 and list(frame.columns) == ["layer", "head", *STATS]
    assert frame["entropy"].iloc[0] == pytest.approx(stats.entropy[0, 0])
