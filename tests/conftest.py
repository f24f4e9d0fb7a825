"""Shared fixtures: the two bundled real models and the shipped digits ViT (loaded once per session)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# Converted GGUF copies go to a per-run cache so the suite never depends on a user's cache.
os.environ.setdefault("XDG_CACHE_HOME", str(Path(__file__).resolve().parent.parent / ".cache-test"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Without a GPU, Triton kernels run in Triton's interpreter on CPU tensors; the switch is read when a
# kernel is defined, so it is set before anything imports one.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
torch.manual_seed(0)

TROPHY = "The trophy didn't fit in the suitcase because it was too big."


@pytest.fixture(scope="session")
def minilm():
    from headmap.models import load

    return load("minilm")


@pytest.fixture(scope="session")
def smollm2():
    from headmap.models import load

    return load("smollm2")


@pytest.fixture(scope="session")
def bert_tokenizer(minilm):
    return minilm.tokenizer


@pytest.fixture(scope="session")
def digits_vit():
    from headmap.models import load

    return load("digits-vit")


@pytest.fixture(scope="session")
def digit_png(tmp_path_factory) -> Path:
    """A held-out 5 of scikit-learn's digits as a 64x64 PNG (the processor brings it back to 8x8)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = tmp_path_factory.mktemp("img") / "five.png"
    pixels = np.rint(digits.images[1700] * (255 / 16)).astype(np.uint8)
    assert digits.target[1700] == 5
    Image.fromarray(pixels, "L").resize((64, 64), Image.NEAREST).save(path)
    return path
