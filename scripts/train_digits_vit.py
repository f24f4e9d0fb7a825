"""Train the small ViT that headmap ships (``headmap.load("digits-vit")``) on scikit-learn's digits.

No ViT weights come with any installable package, so headmap trains its own: a 3-layer, 4-head
ViT over 8x8 grayscale digits in 2x2 patches (a 4x4 grid after a CLS token), on a CPU in well
under a minute, seeded so that the same versions give the same weights. It writes the model
(``model.safetensors`` + ``config.json``), its image processor (``preprocessor_config.json``) and
``metrics.json`` (held-out accuracy, seed, training time) into the package folder.

    OMP_NUM_THREADS=1 python scripts/train_digits_vit.py            # into src/headmap/models/shipped/digits_vit
    OMP_NUM_THREADS=1 python scripts/train_digits_vit.py --out /tmp/digits
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

SHIPPED = Path(__file__).resolve().parent.parent / "src" / "headmap" / "models" / "shipped" / "digits_vit"
SEED = 0
EPOCHS = 40
TEST_FRACTION = 0.25


def digit_images() -> tuple[list[Image.Image], np.ndarray]:
    """The 1,797 digits as 8x8 grayscale images (16 gray levels stretched to 0..255), and their labels."""
    digits = load_digits()
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    return [Image.fromarray(p, "L") for p in pixels], digits.target.astype(np.int64)


def split(seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and the held-out digits (stratified by label)."""
    labels = load_digits().target
    train, test = train_test_split(
        np.arange(len(labels)), test_size=TEST_FRACTION, random_state=seed, stratify=labels
    )
    return np.sort(train), np.sort(test)


def processor() -> ViTImageProcessorPil:
    """Any image becomes an 8x8 grayscale input in [-1, 1] (the caller converts it to grayscale)."""
    return ViTImageProcessorPil(
        do_resize=True,
        size={"height": 8, "width": 8},
        do_rescale=True,
        do_normalize=True,
        image_mean=[0.5],
        image_std=[0.5],
        do_convert_rgb=False,
    )


def config() -> ViTConfig:
    return ViTConfig(
        image_size=8,
        patch_size=2,
        num_channels=1,
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=96,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.0,
        num_labels=10,
        id2label={i: str(i) for i in range(10)},
        label2id={str(i): i for i in range(10)},
        architectures=["ViTForImageClassification"],
    )


def pixel_values(images: list[Image.Image]) -> torch.Tensor:
    out: torch.Tensor = processor()(images=images, return_tensors="pt")["pixel_values"]
    return out


def accuracy(model: ViTForImageClassification, pixels: torch.Tensor, labels: np.ndarray) -> float:
    """Share of ``labels`` the model gets right."""
    with torch.inference_mode():
        predicted = model(pixel_values=pixels).logits.argmax(-1).numpy()
    return float((predicted == labels).mean())


def train(seed: int = SEED, epochs: int = EPOCHS) -> tuple[ViTForImageClassification, dict[str, object]]:
    """The trained model and its metrics; the same seed and versions give the same weights."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    images, labels = digit_images()
    pixels = pixel_values(images)
    train_idx, test_idx = split(seed)
    model = ViTForImageClassification(config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    steps = epochs * -(-len(train_idx) // 64)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        order = torch.from_numpy(train_idx)[torch.randperm(len(train_idx), generator=generator)]
        for batch in order.split(64):
            loss = model(pixel_values=pixels[batch], labels=torch.from_numpy(labels[batch.numpy()])).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    seconds = time.perf_counter() - start
    model.eval()
    metrics: dict[str, object] = {
        "test_accuracy": accuracy(model, pixels[test_idx], labels[test_idx]),
        "train_accuracy": accuracy(model, pixels[train_idx], labels[train_idx]),
        "test_images": len(test_idx),
        "train_images": len(train_idx),
        "split": f"sklearn.datasets.load_digits, train_test_split(test_size={TEST_FRACTION}, "
        f"random_state={seed}, stratify=labels)",
        "seed": seed,
        "epochs": epochs,
        "train_seconds": round(seconds, 1),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    return model, metrics


def save(model: ViTForImageClassification, metrics: dict[str, object], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor().save_pretrained(out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SHIPPED, help="folder to write the model into")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one thread: the same sums in the same order on every machine
    model, metrics = train(args.seed, args.epochs)
    save(model, metrics, args.out)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
