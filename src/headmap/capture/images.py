"""Turn an image into what an image model takes, and into the units its attention maps run over.

An image goes through the model's own image processor (its resizing, cropping and normalization),
exactly as ``model(**processor(images=image, return_tensors="pt"))`` would see it. Its units are the
model's prefix tokens (CLS, DeiT's distillation token, DINOv2's registers) and then one patch per
grid cell, row by row; :class:`~headmap.tokens.Patches` records the grid and the pixels the model saw.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from headmap.capture.discovery import Architecture, VisionLayout
from headmap.capture.encoding import Encoded, encode
from headmap.errors import HeadmapError
from headmap.models import LoadedModel
from headmap.result import Side
from headmap.tokens import PREFIX, Patches, Tokens

#: One image: a PIL image, or the path of an image file (a ``Path``; a plain string is a text).
ImageInput = Image.Image | os.PathLike[str]


@dataclass(frozen=True)
class Prompt:
    """A text with an image in it, for a vision-language model (LLaVA-style): ``text`` holds the
    model's image token (LLaVA's ``<image>``) once, where the image goes, e.g.
    ``"USER: <image>\nWhat is this? ASSISTANT:"``."""

    text: str
    image: ImageInput


#: What a capture takes: a text, its exact ids, an image, or a text with an image.
Input = str | Encoded | ImageInput | Prompt

#: Names of the prefix tokens of models whose prefix is more than a CLS token.
_PREFIX_NAMES = {"deit": ("CLS", "DIST")}

__all__ = [
    "ImageInput",
    "Input",
    "Prompt",
    "encode_inputs",
    "image_inputs",
    "is_single",
    "read_image",
    "text_or_image",
]


def text_or_image(
    text: Input | Sequence[Input] | None, image: ImageInput | str | None
) -> Input | Sequence[Input]:
    """What to capture: ``text``, ``image`` (a string there is a path), or both: one text with the
    image in it, for a vision-language model (:class:`Prompt`)."""
    picture = Path(image) if isinstance(image, str) else image
    if text is None and picture is not None:
        return picture
    if text is None:
        raise HeadmapError("give a text, an image (image=PATH), or both for a vision-language model")
    if picture is None:
        return text
    if not isinstance(text, str):
        raise HeadmapError("with image=, give one text (holding the image token where the image goes)")
    return Prompt(text, picture)


def is_single(item: object) -> bool:
    """Whether a capture input is one text or image (rather than a list of them)."""
    return isinstance(item, (str, Encoded, Image.Image, os.PathLike, Prompt))


def is_image(item: object) -> bool:
    return isinstance(item, (Image.Image, os.PathLike))


def read_image(image: ImageInput) -> Image.Image:
    """The image itself, read from its file where a path is given (one clear error if it cannot be)."""
    if isinstance(image, Image.Image):
        return image
    path = Path(image)
    try:
        with Image.open(path) as opened:
            opened.load()
            return opened.copy()
    except FileNotFoundError:
        raise HeadmapError(
            f"image {path} does not exist: give the path of a PNG, JPEG or other image file"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise HeadmapError(
            f"cannot read {path} as an image ({type(exc).__name__}): give a PNG, JPEG or other image file"
        ) from None


def prefix_names(model_type: str, count: int) -> tuple[str, ...]:
    """Labels of a model's prefix tokens: ``CLS`` first, then registers (``reg0``...) unless the model
    is known to name them otherwise."""
    known = _PREFIX_NAMES.get(model_type, ())
    if len(known) == count:
        return known
    return (("CLS",) + tuple(f"reg{i}" for i in range(count - 1))) if count else ()


def shown_pixels(pixels: torch.Tensor, processor: object) -> np.ndarray:
    """The processed image as ``uint8`` ``[height, width, channels]``: its normalization undone."""
    values = pixels.detach().to(torch.float64).cpu().numpy().transpose(1, 2, 0)
    if getattr(processor, "do_normalize", False):
        channels = values.shape[-1]
        mean = np.broadcast_to(
            np.asarray(getattr(processor, "image_mean", 0.0), dtype=np.float64), (channels,)
        )
        std = np.broadcast_to(np.asarray(getattr(processor, "image_std", 1.0), dtype=np.float64), (channels,))
        values = values * std + mean
    scale = (
        float(getattr(processor, "rescale_factor", 1 / 255))
        if getattr(processor, "do_rescale", True)
        else 1.0
    )
    shown: np.ndarray = np.clip(np.rint(values / scale), 0, 255).astype(np.uint8)
    return shown


def encode_image(
    loaded: LoadedModel, layout: VisionLayout, image: ImageInput, name: str = ""
) -> tuple[torch.Tensor, Tokens]:
    """``pixel_values`` ``[channels, height, width]`` of one image, and its units as :class:`Tokens`."""
    if loaded.processor is None:
        raise HeadmapError(
            f"{loaded.name} has no image processor: load it from a folder with a preprocessor_config.json"
        )
    picture = read_image(image)
    # The model's channel count decides: a grayscale model gets a grayscale image whatever the file holds.
    picture = picture.convert("L" if layout.channels == 1 else "RGB")
    try:
        pixels = loaded.processor(images=picture, return_tensors="pt")["pixel_values"][0]  # type: ignore[operator]  # untyped processor
    except (ValueError, TypeError) as exc:
        raise HeadmapError(
            f"{loaded.name}'s image processor cannot take {name or 'this image'}: {exc}"
        ) from None
    rows, cols = pixels.shape[1] // layout.patch[0], pixels.shape[2] // layout.patch[1]
    model_type = str(getattr(loaded.model.config, "model_type", ""))
    prefix = prefix_names(model_type, layout.prefix)
    labels = prefix + tuple(f"p({r},{c})" for r in range(rows) for c in range(cols))
    cells = (PREFIX,) * len(prefix) + tuple((r, c) for r in range(rows) for c in range(cols))
    n = len(labels)
    tokens = Tokens(
        text=name,
        tokens=labels,
        offsets=((0, 0),) * n,
        special=(True,) * len(prefix) + (False,) * (n - len(prefix)),
        unit="patch",
        patches=Patches((rows, cols), cells, shown_pixels(pixels, loaded.processor)),
    )
    return pixels, tokens


def encode_inputs(
    loaded: LoadedModel, arch: Architecture, items: Sequence[Input], limit: int | None
) -> tuple[list[tuple[list[int], Tokens]], list[torch.Tensor]]:
    """Each input's token ids and :class:`Tokens` (no ids for an image), and the images' pixels (none
    for texts); an image for a text model, or a text for an image model, is refused in one line."""
    images = [is_image(item) for item in items]
    if arch.vision is None:
        if any(images):
            raise HeadmapError(
                f"{loaded.name} takes text, not images: give it a text, or load an image model"
            )
        return [encode(loaded.tokenizer, item, limit) for item in items], []  # type: ignore[arg-type]  # texts, checked above
    if not all(images):
        raise HeadmapError(
            f"{loaded.name} takes images, not text: give a PIL image or a Path (on the command line, --image PATH)"
        )
    encoded: list[tuple[list[int], Tokens]] = []
    pixels: list[torch.Tensor] = []
    for item in items:
        name = Path(item).name if isinstance(item, os.PathLike) else ""
        values, tokens = encode_image(loaded, arch.vision, item, name)  # type: ignore[arg-type]  # images, checked above
        encoded.append(([], tokens))
        pixels.append(values)
    return encoded, pixels


def image_inputs(
    pixels: Sequence[torch.Tensor], units: Sequence[int]
) -> tuple[dict[str, torch.Tensor], dict[Side, list[torch.Tensor]]]:
    """Model inputs of a batch of images of ``units`` units each (every unit is real: no padding)."""
    if len({tuple(p.shape) for p in pixels}) > 1:
        raise HeadmapError(
            "the images of a batch came out of the processor in different sizes: capture them with batch_size=1"
        )
    return {"pixel_values": torch.stack(list(pixels))}, {Side.SOURCE: [torch.arange(n) for n in units]}
