"""Image encoders (ViT, DeiT, BEiT, DINOv2 with registers, CLIP, SigLIP) against their own eager
attention, as random-weight models from configs: <= 1e-5 in float32, like the text models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TROPHY
from PIL import Image
from tiny_models import VISION_CONFIGS, VISION_PREFIX, build_vision
from transformers import ViTImageProcessorPil

from headmap.capture import capture
from headmap.capture.discovery import discover
from headmap.errors import HeadmapError

TOL = 1e-5


def picture(seed: int = 0, size: int = 32) -> Image.Image:
    """A structured RGB test image: a bright square on a noisy gradient."""
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 200, size)[None, :, None] + rng.normal(0, 20, (size, size, 3))
    base[8:20, 12:24] = 250
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")


@pytest.fixture(scope="module")
def processor():
    return ViTImageProcessorPil(size={"height": 32, "width": 32})


@pytest.fixture(scope="module", params=sorted(VISION_CONFIGS))
def tiny_vision(request, processor):
    fast, eager = build_vision(request.param, processor)
    return request.param, fast, eager


def eager_maps(eager: torch.nn.Module, processor, image: Image.Image) -> tuple[torch.Tensor, ...]:
    pixels = processor(images=image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        return eager(pixel_values=pixels, output_attentions=True).attentions


def test_matches_eager(tiny_vision, processor):
    name, fast, eager = tiny_vision
    assert fast.model.config._attn_implementation == "sdpa"  # the model's own fast kernel is what runs
    result = capture(fast, image=picture())
    reference = eager_maps(eager, processor, picture())
    assert len(result.layers) == len(reference) == 2
    prefix = VISION_PREFIX[name]
    assert result.source.tokens[: len(prefix)] == prefix
    assert result.source.unit == "patch" and result.source.patches is not None
    assert result.source.patches.grid == (4, 4)
    assert len(result.source) == len(prefix) + 16
    assert result.source.tokens[len(prefix)] == "p(0,0)" and result.source.tokens[-1] == "p(3,3)"
    for layer in result.layers:
        expected = reference[layer.key.index][0].numpy()
        assert layer.weights.shape == expected.shape
        assert np.abs(layer.weights - expected).max() <= TOL, (name, layer.key.name)
        assert layer.weights.max() > 2.0 / layer.weights.shape[-1]  # not uniform: the check means something


def test_subset_and_batch(tiny_vision, processor):
    name, fast, eager = tiny_vision
    images = [picture(0), picture(1), picture(2)]
    batch = capture(fast, images, layers=[-1], heads=[2, 0], rows=[0], batch_size=3)
    for image, got in zip(images, batch):
        expected = eager_maps(eager, processor, image)[-1][0][[2, 0]][:, [0]].numpy()
        assert got.layer(-1).heads == (2, 0) and got.layer(-1).rows == (0,)
        assert np.abs(got.layer(-1).weights - expected).max() <= TOL


def test_pixels_are_what_the_model_saw(processor):
    fast, _ = build_vision("vit", processor)
    image = picture()
    shown = capture(fast, image).source.patches.pixels
    assert shown.shape == (32, 32, 3) and shown.dtype == np.uint8
    # The processor's resize is the identity at 32x32, so undoing its normalization gives the image back.
    assert np.abs(shown.astype(int) - np.asarray(image).astype(int)).max() <= 1


def test_clip_text_tower_matches_eager(bert_tokenizer):
    fast, eager = build_vision("clip_text", bert_tokenizer)
    assert discover(fast.model).vision is None
    result = capture(fast, TROPHY)
    enc = bert_tokenizer(TROPHY, return_tensors="pt")
    with torch.no_grad():
        reference = eager(**enc, output_attentions=True).attentions
    for layer in result.layers:
        assert np.abs(layer.weights - reference[layer.key.index][0].numpy()).max() <= TOL
    causal = result.layer(0).weights
    assert np.all(np.triu(causal[0], 1) == 0)  # CLIP's text encoder is causal


def test_bad_inputs_get_one_line(processor, bert_tokenizer, tmp_path):
    fast, _ = build_vision("vit", processor)
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    for call, words in [
        (lambda: capture(fast, image=broken), "cannot read"),
        (lambda: capture(fast, image=tmp_path / "missing.png"), "does not exist"),
        (lambda: capture(fast, "a text"), "takes images, not text"),
        (
            lambda: capture(build_vision("clip_text", bert_tokenizer)[0], image=picture()),
            "takes text, not images",
        ),
        (lambda: capture(fast), "give a text, an image"),
        (
            lambda: capture(fast, "a text", image=picture()),
            "is no vision-language model: give it a text or an image",
        ),
    ]:
        with pytest.raises(HeadmapError, match=words) as info:
            call()
        assert "\n" not in str(info.value)
    assert str(broken) in str(pytest.raises(HeadmapError, capture, fast, image=str(broken)).value)
    assert isinstance(Path(broken), Path)
