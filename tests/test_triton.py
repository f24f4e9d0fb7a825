"""The Triton fused statistics kernel: its output and row sums against a float64 reference, and
statistics through it against the exact path, per architecture.

Without a GPU the kernel runs in Triton's interpreter on CPU tensors (conftest sets
``TRITON_INTERPRET=1``; ``HEADMAP_TRITON=1`` lets capture take it there); on a GPU the same tests
run on CUDA tensors (``scripts/gpu-check.sh``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from attention_reference import reference
from conftest import TROPHY
from test_fused import _fused_vs_kernel
from tiny_models import build

from headmap import capture
from headmap.analysis.stats import STATS, collect_stats
from headmap.capture import triton_stats
from headmap.capture.native import ElementLayout
from headmap.capture.plan import TRITON

triton_kernel = pytest.importorskip("headmap.capture.triton_kernel")
# Rows whose every key is masked (padding rows: never asked) sum e * s over float32's lowest scores
# and overflow, on a GPU as here; only the interpreter's numpy says so.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = 1e-5
TEXTS = [TROPHY, "Hi there.", "Attention is correlation, not causation, so read every map with care."]
#: The families whose self-attention the kernel serves (no position bias), each with what it adds:
#: padding masks (bert, roberta, albert), grouped keys (llama, qwen2), windows (mistral), softcap and
#: window (gemma2), partial rotary (gpt_neox), torch SDPA (falcon).
FAMILIES = ["bert", "gpt2", "llama", "qwen2", "mistral", "gemma2", "gpt_neox", "roberta", "albert", "falcon"]


@pytest.fixture(autouse=True)
def triton_here(monkeypatch):
    """Let capture take the Triton kernel on CPU tensors (through the interpreter) where no GPU is."""
    monkeypatch.setenv("HEADMAP_TRITON", "1")
    if triton_stats.unavailable() is not None:
        pytest.skip(triton_stats.unavailable())


def _layout(batch: int, n: int, texts: list[tuple[int, int]], special: list[int]) -> ElementLayout:
    runs = [torch.arange(a, b) for a, b in texts]
    return ElementLayout.of_runs(runs, [torch.tensor([s - a for s in special if a <= s < b]) for a, b in texts],
                                 n, n, packed=len(texts) > 1)  # fmt: skip


CASES = {
    # name: (causal, window, softcap, mask, texts [(start, stop)], special keys)
    "causal": (True, None, None, None, [(0, 37)], [0]),
    "bidirectional": (False, None, None, None, [(0, 37)], [0, 36]),
    "window": (True, 7, None, None, [(0, 37)], [0]),
    "softcap": (True, None, 30.0, None, [(0, 37)], [0]),
    "bool mask": (False, None, None, "bool", [(0, 37)], [0, 5]),
    "additive mask": (False, None, None, "float", [(0, 37)], [3]),
    "left padding": (True, None, None, "float", [(6, 37)], [6]),
    "packed": (True, None, None, None, [(0, 9), (9, 30), (30, 37)], [0, 9, 29, 30]),
    "packed window softcap": (True, 5, 20.0, "float", [(0, 20), (20, 37)], [0, 20]),
}


def _inputs(case: str, dtype: torch.dtype, seed: int = 0):
    causal, window, softcap, masked, texts, special = CASES[case]
    torch.manual_seed(seed)
    b, h, kv, n, d, dv = 2, 4, 2, 37, 24, 32
    q = torch.randn(b, n, h, d).transpose(1, 2)  # a strided view, as models hand queries over
    k, v = torch.randn(b, kv, n, d), torch.randn(b, kv, n, dv)
    layout = _layout(b, n, texts, special)
    mask = None
    if masked is not None:
        keep = torch.rand(b, 1, n, n) > 0.3
        keep |= torch.eye(n, dtype=torch.bool)  # every row keeps itself, as real masks do
        if texts[0][0] > 0:  # left padding: keys before the text are masked
            keep[..., : texts[0][0]] = False
        low = torch.finfo(dtype).min
        mask = keep if masked == "bool" else torch.where(keep, 0.0, low).to(dtype)
    tensors = [t.to(dtype).to(DEVICE) for t in (q, k, v)]
    args = dict(
        scale=0.2, causal=causal, window=window, softcap=softcap,
        track=layout.track.expand(b, -1, -1), special=layout.special.sort().values.expand(b, -1),
        key_lo=layout.key_lo.expand(b, -1), key_hi=layout.key_hi.expand(b, -1),
    )  # fmt: skip
    return tensors, args, mask


def _check_sums(got: torch.Tensor, want: torch.Tensor, rows: torch.Tensor, tol: float) -> None:
    """The sums as the statistics read them: normalized by Z, against the reference."""
    got, want = got[:, :, rows].double(), want[:, :, rows]
    assert torch.equal(got[..., 5], want[..., 5])  # visible keys: a count
    z_got, z_want = got[..., 1], want[..., 1]
    assert ((z_got - z_want).abs() <= tol * z_want).all()
    assert ((got[..., 0] - want[..., 0]).abs() <= tol * (1 + want[..., 0].abs())).all()
    for col in (2, 3, 4, 6, 7, 8, 9):
        a, b = got[..., col] / z_got, want[..., col] / z_want
        assert ((a - b).abs() <= tol * (1 + b.abs())).all(), col


@pytest.mark.parametrize("case", sorted(CASES))
def test_kernel_equals_the_float64_reference(case):
    (q, k, v), args, mask = _inputs(case, torch.float32)
    width = 40
    out, sums, maps = triton_kernel.fused_stats(q, k, v, mask=None if mask is None else mask.to(DEVICE),
                                                width=width, **args)  # fmt: skip
    want_out, want_sums, want_maps = reference(q.cpu(), k.cpu(), v.cpu(), mask=mask, width=width, **args)
    texts = CASES[case][4]
    rows = torch.cat([torch.arange(a, b) for a, b in texts])  # padding rows are never asked
    assert (out.cpu().double() - want_out)[:, rows].abs().max() <= TOL
    _check_sums(sums.cpu(), want_sums, rows, TOL)
    assert maps is not None and (maps.cpu().double() - want_maps)[:, :, rows].abs().max() <= TOL


@pytest.mark.parametrize(("dtype", "tol"), [(torch.bfloat16, 3e-2), (torch.float16, 4e-3)])
def test_kernel_in_16_bits(dtype, tol):
    """16-bit inputs: the products q.k are exact in float32 and every sum is float32, so the row sums
    keep float32's accuracy; the output rounds the weights to the value dtype before P V (as flash
    attention does) and itself to the dtype: measured 1.6e-2 (bfloat16) and 8.5e-4 (float16) here."""
    (q, k, v), args, mask = _inputs("additive mask", dtype)
    out, sums, _ = triton_kernel.fused_stats(q, k, v, mask=mask.to(DEVICE), **args)
    want_out, want_sums, _ = reference(q.cpu(), k.cpu(), v.cpu(), mask=mask, **args)
    assert out.dtype == dtype and sums.dtype == torch.float32
    assert (out.cpu().double() - want_out).abs().max() <= tol
    _check_sums(sums.cpu(), want_sums, torch.arange(q.shape[2]), TOL)


def _stats(model, texts, **options):
    return collect_stats(model, texts, **options)


def _assert_stats_equal(got, expected, tol=TOL):
    for a, b in zip(got, expected, strict=True):
        for name in STATS:
            np.testing.assert_allclose(a.stat(name), b.stat(name), atol=tol, rtol=tol, err_msg=name)


def _model(name, tokenizer, dtype=torch.float32):
    model = build(name, tokenizer)[0]
    model.model.to(device=DEVICE, dtype=dtype)
    return model


@pytest.mark.parametrize("name", FAMILIES)
def test_statistics_through_the_kernel_equal_the_exact_path(name, bert_tokenizer):
    model = _model(name, bert_tokenizer)
    got = _stats(model, TEXTS, pack=False)
    notes = " ".join(got[0].notes)
    assert "Triton fused kernel (each layer's attention output and statistics in one pass): all" in notes, (
        notes
    )
    _assert_stats_equal(got, _stats(model, TEXTS, fused=False, pack=False))


@pytest.mark.parametrize("name", ["llama", "bert", "gemma2"])
def test_packed_batches_through_the_kernel(name, bert_tokenizer):
    """A packed batch (each row confined to its own text by its key range) through the kernel: the
    statistics equal the padded exact path's, and the maps each text's own."""
    model = _model(name, bert_tokenizer)
    got = _stats(model, TEXTS, pack=True)
    notes = " ".join(got[0].notes)
    assert "packed batches" in notes and "Triton fused kernel" in notes, notes
    _assert_stats_equal(got, _stats(model, TEXTS, fused=False, pack=False))
    packed = capture(model, TEXTS, pack=True)
    for p, text in zip(packed, TEXTS, strict=True):
        for lp, la in zip(p.layers, capture(model, text).layers, strict=True):
            np.testing.assert_allclose(lp.weights, la.weights, atol=TOL)


@pytest.mark.parametrize("name", ["llama", "gemma2", "bert"])
def test_the_model_gets_its_own_output(name, bert_tokenizer):
    """What the kernel hands back to the model equals the model's own attention output (float32)."""
    gaps = _fused_vs_kernel(_model(name, bert_tokenizer), TROPHY, TRITON)
    assert gaps and max(gaps) <= TOL


def test_a_bfloat16_model_takes_the_kernel(bert_tokenizer):
    """A bfloat16 model's statistics through the kernel, against the exact path in bfloat16: the two
    see the same bfloat16 queries and keys, but the layers' outputs differ by bfloat16 rounding
    (flash-style P V against the model's kernel), which the next layer's inputs carry: measured
    9.5e-3 here (gemma2 6.4e-3, bert 1.9e-2)."""
    model = _model("llama", bert_tokenizer, torch.bfloat16)
    got = _stats(model, TEXTS)
    assert "Triton fused kernel" in " ".join(got[0].notes)
    _assert_stats_equal(got, _stats(model, TEXTS, fused=False), tol=3e-2)


def test_route_prefers_the_kernel_and_says_why_not(bert_tokenizer, monkeypatch):
    model = _model("t5", bert_tokenizer)
    notes = " ".join(_stats(model, TROPHY).notes)
    assert "position bias (T5-style), which the Triton kernel does not take" in notes, notes
    monkeypatch.setenv("HEADMAP_TRITON", "0")
    assert triton_stats.unavailable() == "HEADMAP_TRITON=0"
    llama = _model("llama", bert_tokenizer)
    notes = " ".join(_stats(llama, TROPHY).notes)
    assert "Triton" not in notes, notes
