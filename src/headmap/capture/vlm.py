"""A LLaVA-style vision-language model's input built by hand: the text's ids with the image token
repeated once per image feature, and the image's ``pixel_values``.

The language model sees the image as that run of image tokens: LLaVA puts the vision tower's patch
features, row by row (its ``default`` strategy drops CLS, ``full`` keeps it first), into the image
tokens' positions in order. So each image token is one grid cell, recorded in
:class:`~headmap.tokens.Patches` (text tokens are no cell), and a text token's attention to the image
tokens is a map over the image: ``result.figure(layer, head, query=...)`` draws it over the picture.
No processor download: ids come from the caller (or its tokenizer), pixels from the model's image
processor where it has one, else as given.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from headmap.capture.encoding import Encoded
from headmap.capture.images import ImageInput, Prompt, read_image, shown_pixels
from headmap.errors import HeadmapError
from headmap.models import LoadedModel
from headmap.tokens import PREFIX, Patches, Tokens

__all__ = ["image_positions", "prompt_input", "vlm_input", "vlm_layout"]


def vlm_layout(model: torch.nn.Module) -> tuple[int, tuple[int, int], bool]:
    """``(image token id, patch grid, whether CLS comes first)`` of a LLaVA-style model's config."""
    config = getattr(model, "config", None)
    vision = getattr(config, "vision_config", None)
    token = getattr(config, "image_token_id", None)
    if vision is None or token is None or not hasattr(vision, "patch_size"):
        raise HeadmapError(
            f"{type(model).__name__} is not a LLaVA-style vision-language model (a config with "
            "vision_config and image_token_id): capture its text with a string instead"
        )
    side = int(vision.image_size) // int(vision.patch_size)
    strategy = getattr(config, "vision_feature_select_strategy", "default")
    if strategy not in ("default", "full"):
        raise HeadmapError(
            f"vision_feature_select_strategy {strategy!r} is not supported: use 'default' or 'full'"
        )
    return int(token), (side, side), strategy == "full"


def _pixels(
    loaded: LoadedModel, image: ImageInput | torch.Tensor, size: int
) -> tuple[torch.Tensor, np.ndarray]:
    """``pixel_values`` ``[channels, height, width]`` and the picture as shown (``uint8``)."""
    if isinstance(image, torch.Tensor):
        pixels = image[0] if image.ndim == 4 else image
        values = pixels.detach().to(torch.float64)
        # No processor to undo: the values are stretched to the full grey range for the picture.
        span = (values.max() - values.min()).clamp(min=1e-12)
        shown = ((values - values.min()) / span * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    else:
        if loaded.processor is None:
            raise HeadmapError(
                f"{loaded.name} has no image processor: give pixel_values as a tensor [3, H, W]"
            )
        pixels = loaded.processor(images=read_image(image).convert("RGB"), return_tensors="pt")[  # type: ignore[operator]  # untyped processor
            "pixel_values"
        ][0]
        shown = shown_pixels(pixels, loaded.processor)
    if pixels.ndim != 3 or tuple(pixels.shape[1:]) != (size, size):
        raise HeadmapError(
            f"the model's vision tower takes {size}x{size} images, not {tuple(pixels.shape)}: resize the image"
        )
    return pixels, shown


def vlm_input(
    loaded: LoadedModel,
    image: ImageInput | torch.Tensor,
    before: Sequence[int],
    after: Sequence[int] = (),
) -> Encoded:
    """The exact input of a LLaVA-style model: ids ``before``, the image's tokens, ids ``after``, and
    the image's ``pixel_values`` (a PIL image or path through the model's image processor, or a
    tensor ``[3, H, W]`` taken as is). Capture it like any text: ``headmap.capture(model, it)``."""
    token, (rows, cols), with_cls = vlm_layout(loaded.model)
    if token in before or token in after:
        raise HeadmapError(f"the text ids hold the image token {token}: give the ids around the image only")
    vision = loaded.model.config.vision_config
    pixels, shown = _pixels(loaded, image, int(vision.image_size))
    count = rows * cols + int(with_cls)
    ids = (*[int(i) for i in before], *([token] * count), *[int(i) for i in after])
    convert = getattr(loaded.tokenizer, "convert_ids_to_tokens", None)
    special = set(getattr(loaded.tokenizer, "all_special_ids", []) or [])

    def names(part: Sequence[int]) -> list[str]:
        return [str(t) for t in convert(list(part))] if convert and part else [f"[{i}]" for i in part]

    grid = [(r, c) for r in range(rows) for c in range(cols)]
    image_cells = [PREFIX] * int(with_cls) + grid
    labels = (
        *names(before),
        *(["CLS"] * int(with_cls)),
        *(f"p({r},{c})" for r, c in grid),
        *names(after),
    )
    cells = (*[PREFIX] * len(before), *image_cells, *[PREFIX] * len(after))
    tokens = Tokens(
        text=getattr(image, "name", "") if not isinstance(image, torch.Tensor) else "",
        tokens=tuple(labels),
        offsets=((0, 0),) * len(ids),
        special=tuple(i in special for i in ids),
        patches=Patches((rows, cols), tuple(cells), shown),
    )
    return Encoded(ids, tokens, inputs=(("pixel_values", pixels[None]),))


def image_positions(encoded: Encoded | Tokens) -> dict[tuple[int, int], int]:
    """Each grid cell's position in the sequence (the image token that holds that patch)."""
    tokens = encoded.tokens if isinstance(encoded, Encoded) else encoded
    if tokens.patches is None:
        raise HeadmapError("this input holds no image: build it with vlm_input")
    return {cell: i for i, cell in enumerate(tokens.patches.cells) if cell != PREFIX}


def prompt_input(loaded: LoadedModel, prompt: Prompt) -> Encoded:
    """The exact input of a text with an image in it: the text tokenized whole, as the model's own
    processor does (LLaVA's ``<image>`` is a special token, so the text splits there), and the image
    token's one place expanded into the image's tokens (:func:`vlm_input`)."""
    if getattr(getattr(loaded.model, "config", None), "image_token_id", None) is None:
        raise HeadmapError(f"{loaded.name} is no vision-language model: give it a text or an image, not both")
    token, _, _ = vlm_layout(loaded.model)
    name = str(loaded.tokenizer.convert_ids_to_tokens([token])[0]) if loaded.tokenizer else f"[{token}]"  # type: ignore[attr-defined]  # untyped tokenizer
    ids = [int(i) for i in loaded.tokenizer(prompt.text)["input_ids"]]  # type: ignore[operator]  # untyped tokenizer
    if ids.count(token) != 1:
        raise HeadmapError(
            f"the text holds the image token {name!r} {ids.count(token)} times: put it once, where the "
            f"image goes, e.g. 'USER: {name}\\nWhat is in the picture? ASSISTANT:'"
        )
    at = ids.index(token)
    return vlm_input(loaded, prompt.image, ids[:at], ids[at + 1 :])
