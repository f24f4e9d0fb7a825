"""A LLaVA-style vision-language model (tiny CLIP vision tower + tiny Llama, random weights from a
config): capture parity against eager for the language model's and the vision tower's layers, and
the image tokens' positions mapped back onto the patch grid and drawn over the image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from tiny_models import VISION_DIMS, VOCAB, twins
from transformers import ViTImageProcessorPil

from headmap.analysis.stats import collect_stats
from headmap.capture import capture
from headmap.capture.discovery import discover
from headmap.capture.vlm import image_positions, vlm_input, vlm_layout
from headmap.errors import HeadmapError
from headmap.models import LoadedModel
from headmap.render.patches import plot_image_head
from headmap.tokens import PREFIX
from headmap.view.patches import query_row

TOL = 1e-5
IMAGE_TOKEN = VOCAB - 1  # the tokenizer's last id, kept for the image


def _config(
    strategy: str = "default", vocab: int = VOCAB, image_token: int = IMAGE_TOKEN
) -> transformers.LlavaConfig:
    vision = transformers.CLIPVisionConfig(**VISION_DIMS)
    text = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    return transformers.LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=image_token,
        vision_feature_layer=-1,
        vision_feature_select_strategy=strategy,
    )


def build_llava(tokenizer, processor, strategy: str = "default") -> tuple[LoadedModel, torch.nn.Module]:
    """``(fast, eager)``: the same random weights under the default (SDPA) and the eager implementation."""
    config = _config(strategy)
    fast, eager = twins(transformers.AutoModelForImageTextToText, config, 0.3)
    return LoadedModel(model=fast, tokenizer=tokenizer, name="tiny-llava", processor=processor), eager


def picture() -> Image.Image:
    rng = np.random.default_rng(0)
    base = np.linspace(0, 200, 32)[None, :, None] + rng.normal(0, 20, (32, 32, 3))
    base[8:20, 12:24] = 250
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")


@pytest.fixture(scope="module")
def processor():
    return ViTImageProcessorPil(size={"height": 32, "width": 32})


@pytest.fixture(scope="module")
def llava(bert_tokenizer, processor):
    return build_llava(bert_tokenizer, processor)


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_language_model_matches_eager(llava, bert_tokenizer):
    fast, eager = llava
    assert fast.model.config.text_config._attn_implementation == "sdpa"
    encoded = vlm_input(
        fast, picture(), _ids(bert_tokenizer, "look at"), _ids(bert_tokenizer, "what is the shape ?")
    )
    assert list(encoded.ids).count(IMAGE_TOKEN) == 16 and len(encoded.ids) == 2 + 16 + 5
    result = capture(fast, encoded)
    ids = torch.tensor([encoded.ids])
    with torch.no_grad():
        reference = eager(
            input_ids=ids, pixel_values=dict(encoded.inputs)["pixel_values"], output_attentions=True
        )
    assert len(result.layers) == len(reference.attentions) == 2
    for layer, want in zip(result.layers, reference.attentions):
        np.testing.assert_allclose(layer.weights, want[0].numpy(), atol=TOL)
    # The capture ran the model on the very input eager saw: same next-token logits.
    with torch.no_grad():
        fast_logits = fast.model(input_ids=ids, pixel_values=dict(encoded.inputs)["pixel_values"]).logits
    np.testing.assert_allclose(fast_logits.numpy(), reference.logits.numpy(), atol=1e-4)


def test_vision_tower_matches_eager(llava, processor):
    fast, eager = llava
    tower = LoadedModel(
        model=fast.model.model.vision_tower, tokenizer=None, name="tiny-llava-vision", processor=processor
    )
    assert discover(tower.model).vision is not None
    result = capture(tower, image=picture())
    pixels = processor(images=picture(), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        want = eager.model.vision_tower(pixel_values=pixels, output_attentions=True).attentions
    assert result.source.tokens[0] == "CLS" and len(result.source) == 17
    for layer, reference in zip(result.layers, want):
        np.testing.assert_allclose(layer.weights, reference[0].numpy(), atol=TOL)


def test_image_tokens_are_the_patches_in_order(llava, bert_tokenizer, processor):
    """Image token k holds the vision tower's patch k, and patch k is grid cell (k // 4, k % 4): the
    language model's input embeddings at the image positions are the projected patch features, and
    the patch embedding of cell (r, c) is the one of that 8x8 crop of the pixels."""
    fast, _ = llava
    before = _ids(bert_tokenizer, "see")
    encoded = vlm_input(fast, picture(), before)
    positions = image_positions(encoded)
    assert positions == {(r, c): len(before) + 4 * r + c for r in range(4) for c in range(4)}
    pixels = dict(encoded.inputs)["pixel_values"]
    model = fast.model.model
    seen = {}
    hook = model.language_model.register_forward_pre_hook(
        lambda _, args, kwargs: seen.update(embeds=kwargs["inputs_embeds"]), with_kwargs=True
    )
    try:
        with torch.no_grad():
            fast.model(input_ids=torch.tensor([encoded.ids]), pixel_values=pixels)
    finally:
        hook.remove()
    with torch.no_grad():
        features = model.vision_tower(pixel_values=pixels, output_hidden_states=True).hidden_states[-1]
        projected = model.multi_modal_projector(features[:, 1:])[0]  # "default": CLS dropped
        grid = model.vision_tower.embeddings.patch_embedding(pixels)  # [1, dim, 4, 4]
        for (r, c), position in positions.items():
            np.testing.assert_allclose(seen["embeds"][0, position], projected[4 * r + c], atol=1e-6)
            crop = model.vision_tower.embeddings.patch_embedding(
                pixels[:, :, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8]
            )
            np.testing.assert_allclose(grid[0, :, r, c], crop[0, :, 0, 0], atol=1e-5)
    # The picture is the image the processor made, normalization undone.
    shown = encoded.tokens.patches.pixels
    assert shown.shape == (32, 32, 3) and shown.dtype == np.uint8
    assert np.abs(shown.astype(int) - np.asarray(picture()).astype(int)).max() <= 1


def test_a_text_token_over_the_image(llava, bert_tokenizer, tmp_path):
    fast, _ = llava
    encoded = vlm_input(fast, picture(), _ids(bert_tokenizer, "look at"), _ids(bert_tokenizer, "the square"))
    result = capture(fast, encoded)
    row = query_row(result, result.keys[1], 2, -1)  # the last text token, head 2
    patches = result.source.patches
    on_grid = patches.on_grid(row)
    for (r, c), position in image_positions(encoded).items():
        assert on_grid[r, c] == row[position]
    assert on_grid.shape == (4, 4) and np.isfinite(on_grid).all()
    # The text tokens are no cell: they are the bars beside the picture.
    assert [result.source.tokens[i] for i in patches.prefix][:2] == ["look", "at"]
    assert patches.cells[-1] == PREFIX
    fig = plot_image_head(result, 1, 2, query=-1)
    assert fig._suptitle.get_text().endswith("head 2 · from square")
    caption = " ".join(t.get_text() for t in fig.texts)
    assert "a 4x4 grid of image tokens among 4 text tokens" in caption
    fig.savefig(tmp_path / "over.png")
    assert (tmp_path / "over.png").stat().st_size > 0
    same = result.figure(1, 2, query=-1)  # the result's own figure is the same picture
    assert same._suptitle.get_text() == fig._suptitle.get_text()


def test_full_strategy_keeps_cls_first(bert_tokenizer, processor):
    fast, eager = build_llava(bert_tokenizer, processor, "full")
    encoded = vlm_input(fast, picture(), [101])
    assert list(encoded.ids).count(IMAGE_TOKEN) == 17 and encoded.tokens.tokens[1] == "CLS"
    assert image_positions(encoded)[(0, 0)] == 2
    result = capture(fast, encoded)
    with torch.no_grad():
        want = eager(
            input_ids=torch.tensor([encoded.ids]),
            pixel_values=dict(encoded.inputs)["pixel_values"],
            output_attentions=True,
        ).attentions
    for layer, reference in zip(result.layers, want):
        np.testing.assert_allclose(layer.weights, reference[0].numpy(), atol=TOL)


def test_a_long_prompt_gets_the_heaviest_bars_and_statistics_run(llava, bert_tokenizer):
    fast, _ = llava
    words = _ids(bert_tokenizer, "one two three four five six seven eight nine ten eleven twelve")
    encoded = vlm_input(fast, picture(), words[:6], words[6:])
    result = capture(fast, encoded)
    fig = plot_image_head(result, 1, 0, query=-1)
    bars = [label.get_text() for label in fig.axes[1].get_yticklabels()]
    assert len(bars) == 10 and bars[-2:] == ["4 other tokens", "all patches"]
    row = query_row(result, result.keys[1], 0, -1)
    text_positions = [i for i, cell in enumerate(result.source.patches.cells) if cell == PREFIX]
    heaviest = sorted(sorted(text_positions, key=lambda i: -row[i])[:8])
    assert bars[:8] == [result.source.tokens[i] for i in heaviest]
    # Streamed statistics take the same input (the fused kernel's path, pixel_values included).
    stats = collect_stats(fast, encoded)
    maps = np.stack([layer.weights for layer in result.layers]).astype(np.float64)
    np.testing.assert_allclose(stats.entropy, -(maps * np.log(maps + 1e-30)).sum(-1).mean(-1), atol=1e-5)


def test_bad_inputs_are_refused(llava, bert_tokenizer, minilm):
    fast, _ = llava
    with pytest.raises(HeadmapError, match="image token"):
        vlm_input(fast, picture(), [IMAGE_TOKEN])
    with pytest.raises(HeadmapError, match="32x32"):
        vlm_input(fast, torch.zeros(3, 16, 16), [101])
    with pytest.raises(HeadmapError, match="not a LLaVA-style"):
        vlm_layout(minilm.model)
    tensor_input = vlm_input(fast, torch.randn(3, 32, 32), [101])
    assert tensor_input.tokens.patches.pixels.shape == (32, 32, 3)
    with pytest.raises(HeadmapError, match="batch_size=1"):
        capture(fast, [tensor_input, "plain text"], batch_size=2)
