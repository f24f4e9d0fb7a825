"""Models whose layers have different head counts (pruned): loading and capture.

A cut model keeps the original head numbers only in its layout; capture numbers each layer's heads
0..n-1 as the model holds them. Layer 0 of a cut model sees the same input as the full model, so its
maps are the full model's maps of the kept heads; a deeper layer's are those of the gated model.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from tiny_models import build

import headmap
from headmap.errors import HeadmapError
from headmap.models.pruned import HeadLayout, SlotLinear, current_layouts, cut_heads

TEXT = "The trophy didn't fit in the suitcase because it was too big."
#: Tiny Llama: 4 query heads on 2 KV heads (groups {0, 1} and {2, 3}). Layer 0 loses all of KV
#: group 0; layer 1 loses query head 3 only, leaving groups of 2 and 1 (two slots of one query head).
LLAMA = [HeadLayout((2, 3), (1,)), HeadLayout((0, 1, 2), (0, 1), (0, 0, 1))]
BERT = [HeadLayout((0, 2, 3), (0, 2, 3)), HeadLayout((1,), (1,))]


def _cut(loaded, layouts):
    model = copy.deepcopy(loaded.model)
    cut_heads(model, layouts)
    return headmap.LoadedModel(model, loaded.tokenizer, loaded.name + "-cut")


@pytest.fixture(scope="module")
def llama(bert_tokenizer):
    return build("llama", bert_tokenizer)[0]


@pytest.fixture(scope="module")
def bert(bert_tokenizer):
    return build("bert", bert_tokenizer)[0]


def _removed(layouts, heads):
    """``[(layer, head)]`` the layouts removed, in original numbering."""
    return [(i, h) for i, layout in enumerate(layouts) for h in range(heads) if h not in layout.query]


@pytest.mark.parametrize("name,layouts", [("llama", LLAMA), ("bert", BERT)])
def test_capture_of_a_cut_model_gives_each_layer_its_own_heads(name, layouts, llama, bert):
    full = {"llama": llama, "bert": bert}[name]
    cut = _cut(full, layouts)
    result = headmap.capture(cut, TEXT)
    assert [layer.heads for layer in result.layers] == [tuple(range(len(lay.query))) for lay in layouts]
    assert result.num_heads == max(len(lay.query) for lay in layouts)
    # Layer 0 sees the full model's input; every layer sees the gated model's.
    reference = headmap.capture(full, TEXT)
    with headmap.ablate(full, _removed(layouts, 4)):
        gated = headmap.capture(full, TEXT)
    for li, layout in enumerate(layouts):
        for new, old in enumerate(layout.query):
            np.testing.assert_allclose(result.head(li, new), gated.head(li, old), atol=1e-5)
            if li == 0:
                np.testing.assert_allclose(result.head(0, new), reference.head(0, old), atol=1e-5)


def test_asking_for_a_head_a_cut_layer_lacks_names_the_layer(llama):
    cut = _cut(llama, LLAMA)
    assert headmap.capture(cut, TEXT, layers=[1], heads=[2]).layers[0].heads == (2,)
    with pytest.raises(HeadmapError, match="layer.0 has only 2 heads"):
        headmap.capture(cut, TEXT, heads=[2])


def test_uneven_groups_repeat_a_kept_kv_head_without_new_parameters(llama):
    cut = _cut(llama, LLAMA)
    attention = cut.model.model.layers[1].self_attn
    assert isinstance(attention.k_proj, SlotLinear)
    assert attention.k_proj.weight.shape[0] == 2 * 8  # KV heads 0 and 1 stored once
    assert attention.num_key_value_groups == 1
    hidden = torch.randn(1, 3, 32)
    out = attention.k_proj(hidden).view(1, 3, 3, 8)
    torch.testing.assert_close(out[:, :, 0], out[:, :, 1], rtol=0, atol=0)


def test_cutting_twice_composes(llama):
    once = _cut(llama, [HeadLayout((1, 2, 3), (0, 1), (0, 1, 1)), HeadLayout((0, 1, 2, 3), (0, 1))])
    cut_heads(once.model, LLAMA)
    direct = _cut(llama, LLAMA)
    assert current_layouts(once.model) == LLAMA
    ids = llama.tokenizer(TEXT, return_tensors="pt")
    with torch.inference_mode():
        torch.testing.assert_close(once.model(**ids).logits, direct.model(**ids).logits, rtol=0, atol=0)


def test_a_layer_needs_a_head(llama):
    model = copy.deepcopy(llama.model)
    with pytest.raises(HeadmapError, match="layer 0 would keep no head"):
        cut_heads(model, [HeadLayout((), ()), LLAMA[1]])


def test_other_architectures_are_refused_by_name(bert_tokenizer):
    gpt2 = build("gpt2", bert_tokenizer)[0]
    with pytest.raises(HeadmapError, match=r"GPT2LMHeadModel \(gpt2\)"):
        cut_heads(gpt2.model, [])


def test_stats_of_a_cut_model_are_nan_where_a_layer_lacks_the_head(llama):
    cut = _cut(llama, LLAMA)
    stats = headmap.collect_stats(cut, TEXT)
    assert (
        stats.entropy.shape == (2, 3)
        and np.isnan(stats.entropy[0, 2])
        and not np.isnan(stats.entropy[1]).any()
    )
    with headmap.ablate(llama, _removed(LLAMA, 4)):
        gated = headmap.collect_stats(llama, TEXT)
    for li, layout in enumerate(LLAMA):
        for name in ("entropy", "first_share", "distance"):
            np.testing.assert_allclose(
                stats.stat(name)[li, : len(layout.query)],
                gated.stat(name)[li, list(layout.query)],
                rtol=1e-5,
                atol=1e-6,
            )


def test_ablation_checks_heads_against_each_layer_of_a_cut_model(llama):
    cut = _cut(llama, LLAMA)
    with pytest.raises(HeadmapError, match="layer.0 head 2 is out of range"), headmap.ablate(cut, [(0, 2)]):
        pass
    ids = llama.tokenizer(TEXT, return_tensors="pt")
    with torch.inference_mode():
        with headmap.ablate(cut, [(1, 2)]):
            gated = cut.model(**ids).logits
        with headmap.ablate(llama, [*_removed(LLAMA, 4), (1, 2)]):
            reference = llama.model(**ids).logits
    torch.testing.assert_close(gated, reference, atol=1e-4, rtol=1e-5)


def test_head_importance_of_a_cut_model_is_refused_clearly(llama):
    with pytest.raises(HeadmapError, match="different head counts"):
        headmap.head_importance(_cut(llama, LLAMA), [TEXT])
