"""The fused statistics kernel: its moments equal the exact path's, its output equals the kernel's."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TROPHY
from tiny_models import CONFIGS, PATHS, build

from headmap.capture import fused as fused_module
from headmap.capture import stream
from headmap.capture.discovery import discover, forward_module
from headmap.capture.fused import fusable, fused_attention
from headmap.capture.moments import MOMENT_FIELDS as FIELDS
from headmap.capture.moments import block_moments, pool_keys
from headmap.capture.tap import module_scope, tap_around
from headmap.result import Stack

TOL = 1e-5
TEXTS = [TROPHY, "Hi there.", "Attention is correlation, not causation, so read every map with care."]

KERNEL_ARCHS = sorted(name for name in CONFIGS if PATHS.get(name, "dispatch") != "eager-weights")


@pytest.fixture(autouse=True)
def torch_kernel_on_short_texts(monkeypatch):
    """These tests check the pure-torch kernel itself, which by default serves only long texts and
    only where the compiled one cannot (tests/test_native.py checks that one)."""
    monkeypatch.setattr(fused_module, "TORCH_MIN_TOKENS", 0)
    monkeypatch.setenv("HEADMAP_NATIVE", "0")


class Moments:
    """Collects moments per (text, layer), from blocks (exact path) or from the fused kernel."""

    def __init__(self, fused: bool, cell: int = 3) -> None:
        self.wants_moments, self.keeps_scores, self.cell = fused, True, cell
        self.found: dict = {}
        self.fused_layers: set = set()

    def begin(self, plan) -> None:
        self.plan = plan

    def key_cells(self, item, key):
        n = len(self.plan.key_tokens(item, key))
        return self.cell, math.ceil(n / self.cell)

    def consume(self, item, key, start, block) -> None:
        special = torch.tensor(
            [i for i, s in enumerate(self.plan.key_tokens(item, key).special) if s], dtype=torch.long
        )
        found = block_moments(block, special, key.stack is Stack.CROSS, len(self.plan.key_tokens(item, key)))
        cells = self.key_cells(item, key)
        pooled = pool_keys(block.weights.mean(0), *cells)
        self.found.setdefault((item, key), []).append((start, found, pooled))

    def consume_moments(self, item, key, plan_index, moments) -> None:
        self.fused_layers.add(key)
        self.found.setdefault((item, key), []).append((0, moments, moments.pooled))

    def joined(self) -> dict:
        out = {}
        for where, parts in self.found.items():
            parts.sort(key=lambda p: p[0])
            out[where] = {name: torch.cat([getattr(m, name) for _, m, _ in parts], 1) for name in FIELDS}
            out[where]["visible"] = torch.cat([m.visible for _, m, _ in parts])
            out[where]["pooled"] = torch.cat([p for _, _, p in parts])
        return out


def _compare(exact: dict, fused: dict) -> None:
    assert exact.keys() == fused.keys()
    for where in exact:
        for name in (*FIELDS, "visible", "pooled"):
            a, b = exact[where][name].double(), fused[where][name].double()
            assert torch.equal(a.isnan(), b.isnan()), (where, name)
            # float32 rounding: sums over keys of values up to the text length (distance) or the
            # score range (log Z) are exact to a few parts in 1e6 of their size.
            gap = (a.nan_to_num() - b.nan_to_num()).abs() - TOL * a.nan_to_num().abs()
            assert gap.max().item() <= TOL, (where, name)


@pytest.mark.parametrize("name", KERNEL_ARCHS)
@pytest.mark.parametrize("side", ["right", "left"])
def test_fused_moments_equal_the_exact_path(name, side, bert_tokenizer):
    fast, _ = build(name, bert_tokenizer)
    options = dict(padding_side=side, batch_size=3, block_bytes=4096)
    exact, fused = Moments(fused=False), Moments(fused=True)
    stream(fast, TEXTS, exact, **options)
    stream(fast, TEXTS, fused, **options)
    assert fused.fused_layers  # the kernel really ran
    _compare(exact.joined(), fused.joined())


def test_fused_moments_for_some_heads_and_rows(bert_tokenizer):
    fast, _ = build("llama", bert_tokenizer)
    options = dict(layers=[1], heads=[3, 0], rows=[-1, 2, 5])
    exact, fused = Moments(fused=False), Moments(fused=True)
    stream(fast, TROPHY, exact, **options)
    stream(fast, TROPHY, fused, **options)
    _compare(exact.joined(), fused.joined())


def _fused_vs_kernel(loaded, text: str, kernel: str | None = None) -> list[float]:
    """Per layer: max |fused output - the model's own kernel output| on the same inputs (``kernel``:
    which fused kernel, the default one where None)."""
    arch = discover(loaded.model)
    modules = [s.module for s in arch.sites.values()]
    gaps = []

    def both(call, proceed):
        kernel = proceed()
        assert fusable(call) is None, fusable(call)
        ours, _ = fused_attention(call, [None] * call.query.shape[0], 1 << 20, kernel)
        gaps.append((ours - kernel).abs().max().item())
        return kernel

    device = next(loaded.model.parameters()).device
    enc = {k: v.to(device) for k, v in loaded.tokenizer(text, return_tensors="pt").items()}
    if arch.is_encoder_decoder:
        enc["decoder_input_ids"] = enc["input_ids"][:, :5]
    with torch.no_grad(), tap_around(both, modules), module_scope(modules):
        forward_module(loaded.model)(**enc)
    return gaps


@pytest.mark.parametrize("name", KERNEL_ARCHS + ["falcon_alibi"])
def test_fused_output_equals_the_kernel(name, bert_tokenizer):
    fast, _ = build(name, bert_tokenizer)
    gaps = _fused_vs_kernel(fast, TROPHY)
    assert gaps and max(gaps) <= TOL


@pytest.mark.slow
def test_fused_output_on_real_models(minilm, smollm2):
    for loaded in (minilm, smollm2):
        assert max(_fused_vs_kernel(loaded, " ".join([TROPHY] * 6))) <= TOL


def test_model_output_under_the_fused_kernel(smollm2):
    """The whole forward with every layer's attention from the fused kernel stays within float32
    rounding of the plain forward."""
    arch = discover(smollm2.model)
    modules = [s.module for s in arch.sites.values()]

    def replace(call, proceed):
        return fused_attention(call, [None] * call.query.shape[0], 1 << 20)[0]

    enc = smollm2.tokenizer(" ".join([TROPHY] * 6), return_tensors="pt")
    runner = forward_module(smollm2.model)
    with torch.no_grad():
        plain = runner(**enc).last_hidden_state
        with tap_around(replace, modules):
            ours = runner(**enc).last_hidden_state
    scale = plain.abs().max().item()
    assert (ours - plain).abs().max().item() <= 1e-5 * max(1.0, scale)
