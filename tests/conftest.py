"""Shared fixtures: the two bundled real models (loaded once per session) and tiny random models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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
