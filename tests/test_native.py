"""The compiled fused-statistics kernel: the same output and moments as the pure-torch kernel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import build

from headmap.analysis.stats import STATS, collect_stats
from headmap.capture import native
from headmap.capture.fused import _element
from headmap.capture.fused_rows import FusedRows
from headmap.capture.moments import MOMENT_FIELDS
from headmap.capture.tap import AttentionCall

pytestmark = pytest.mark.skipif(
    native.unavailable() is not None, reason=f"no compiled kernel: {native.unavailable()}"
)
N = native.MIN_TOKENS + 77  # long enough to take the kernel, and not a multiple of its tiles


@pytest.fixture(scope="module")
def kernel():
    built = native.module()
    assert built is not None, native.unavailable()
    return built


@pytest.mark.parametrize("causal, window", [(True, None), (True, 300), (False, None)])
def test_kernel_equals_the_torch_kernel(kernel, causal, window):
    torch.manual_seed(0)
    heads, kv_heads, dim = 6, 2, 32
    q, k, v = (
        torch.randn(1, heads, N, dim),
        torch.randn(1, kv_heads, N, dim),
        torch.randn(1, kv_heads, N, dim),
    )
    call = AttentionCall(
        module=torch.nn.Identity(),
        query=q * 3,
        key=k,
        value=v,
        mask=None,
        scaling=dim**-0.5,
        is_causal=causal,
        sliding_window=window,
    )
    rows = torch.arange(N)
    ask = FusedRows(
        keys=rows,
        rows=rows,
        plan_index=rows,
        text_rows=rows,
        special=torch.tensor([0, 17, N - 1]),
        cross=False,
        heads=torch.arange(heads),
    )
    ours, found = native.native_element(call, 0, ask, native.runner(kernel))
    theirs, expected = _element(call, 0, ask, 8 << 20)
    assert (ours - theirs).abs().max().item() <= 1e-5
    for name in MOMENT_FIELDS:
        a, b = getattr(found, name), getattr(expected, name)
        assert torch.equal(a.isnan(), b.isnan()), name
        # Float32 sums of up to N terms of size up to N (distance): a few parts in 1e6 of their size.
        assert ((a - b).abs().nan_to_num() - 1e-5 * b.abs().nan_to_num()).max().item() <= 1e-5, name
    assert torch.equal(found.visible, expected.visible)


def test_long_text_statistics_take_the_kernel_and_match_the_exact_path(bert_tokenizer, kernel, monkeypatch):
    fast, _ = build("llama", bert_tokenizer)
    text = " ".join(["the cat sat on the mat and looked at the dog ."] * 95)  # > MIN_TOKENS tokens
    calls = []
    original = native.native_element
    monkeypatch.setattr(native, "native_element", lambda *a, **k: calls.append(1) or original(*a, **k))
    fused = collect_stats(fast, text)
    assert len(calls) == 2  # both layers went through the compiled kernel
    exact = collect_stats(fast, text, fused=False)
    assert len(fused.tokens) >= native.MIN_TOKENS
    for name in STATS:
        np.testing.assert_allclose(fused.stat(name), exact.stat(name), rtol=1e-5, atol=1e-5, err_msg=name)


def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv("HEADMAP_NATIVE", "0")
    assert native.unavailable() == "HEADMAP_NATIVE=0" and native.module() is None


def test_once_built_short_texts_take_the_kernel_too(bert_tokenizer, kernel):
    fast, _ = build("llama", bert_tokenizer)
    assert native.built()
    fused = collect_stats(fast, "the cat sat on the mat and looked at the dog .")
    assert any("compiled fused kernel" in n for n in fused.notes), fused.notes
    exact = collect_stats(fast, "the cat sat on the mat and looked at the dog .", fused=False)
    for name in STATS:
        np.testing.assert_allclose(fused.stat(name), exact.stat(name), rtol=1e-5, atol=1e-5, err_msg=name)
