"""The shipped digits ViT, image pictures in every output, the image CLI and image results saved and loaded."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import headmap
from headmap.errors import HeadmapError
from headmap.render.patches import plot_image_grid, plot_image_head
from headmap.storage import load_result
from headmap.view.patches import query_row, rollout_row

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "src" / "headmap" / "models" / "shipped" / "digits_vit"


def _script():
    spec = importlib.util.spec_from_file_location(
        "train_digits_vit", ROOT / "scripts" / "train_digits_vit.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_weights_are_small_and_documented():
    assert (SHIPPED / "model.safetensors").stat().st_size < 2**20
    metrics = json.loads((SHIPPED / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.9 and metrics["test_images"] == 450 and metrics["seed"] == 0


def test_shipped_accuracy_is_the_recorded_one(digits_vit):
    script = _script()
    images, labels = script.digit_images()
    _, test = script.split(0)
    pixels = torch.cat(
        [digits_vit.processor(images=images[i], return_tensors="pt")["pixel_values"] for i in test]
    )
    recorded = json.loads((SHIPPED / "metrics.json").read_text())["test_accuracy"]
    assert script.accuracy(digits_vit.model, pixels, labels[test]) == pytest.approx(recorded, abs=1e-12)


def test_capture_of_a_png(digits_vit, digit_png):
    result = headmap.capture(digits_vit, image=digit_png)
    assert result.source.tokens[0] == "CLS" and result.source.plural == "patches" and len(result.source) == 17
    assert result.source.patches.grid == (4, 4) and result.source.patches.pixels.shape == (8, 8, 1)
    assert result.source.text == "five.png"
    assert len(result.layers) == 3 and result.num_heads == 4
    # The model reads this 5 as a 5 (the PNG went through its processor, grayscale and 8x8).
    pixels = digits_vit.processor(images=Image.open(digit_png).convert("L"), return_tensors="pt")[
        "pixel_values"
    ]
    with torch.inference_mode():
        assert int(digits_vit.model(pixel_values=pixels).logits.argmax()) == 5
    for layer in result.layers:
        np.testing.assert_allclose(layer.weights.sum(-1), 1.0, atol=1e-5)


def test_rows_and_rollout(digits_vit, digit_png):
    result = headmap.capture(digits_vit, image=digit_png)
    row = query_row(result, result.keys[-1], 1, "CLS")
    np.testing.assert_allclose(row, result.layer(-1).head(1)[0])
    mean = query_row(result, result.keys[-1], None, 0)
    np.testing.assert_allclose(mean, result.layer(-1).weights[:, 0].mean(0), atol=1e-7)
    rolled = rollout_row(result, "CLS")
    assert rolled.shape == (17,) and abs(rolled.sum() - 1) < 1e-9
    # By hand: three layers of 0.5 A + 0.5 I (rows renormalized), multiplied from the first up.
    joint = np.eye(17)
    for layer in result.layers:
        aug = 0.5 * layer.weights.astype(np.float64).mean(0) + 0.5 * np.eye(17)
        joint = (aug / aug.sum(-1, keepdims=True)) @ joint
    np.testing.assert_allclose(rolled, joint[0])
    with pytest.raises(HeadmapError, match="every layer"):
        rollout_row(headmap.capture(digits_vit, image=digit_png, layers=[0]))


def test_pictures_in_every_format(digits_vit, digit_png, tmp_path):
    result = headmap.capture(digits_vit, image=digit_png)
    fig = plot_image_head(result, 2, 1)
    assert "layer 2 · head 1 · from CLS" in fig.texts[-1].get_text() or any(
        "from CLS" in t.get_text() for t in fig.texts
    )
    assert len(fig.axes) == 3  # the overlay, its colorbar, the prefix bars
    assert len(plot_image_grid(result, 0).axes) == 5  # four heads and one colorbar
    for name in ("head.png", "head.svg", "head.pdf", "head.html"):
        path = result.render(tmp_path / name, layer=2, head=1, query="p(1,1)")
        assert path.stat().st_size > 1000
    html = (tmp_path / "head.html").read_text()
    # Self-contained: the interactive view's script and data inline, a static picture for no scripts.
    assert "data:image/png;base64," in html and "hmi-data" in html and "<script src" not in html
    assert not re.search(r"(src|href)=['\"]?https?:", html)
    grid = result.render(tmp_path / "grid.png", layer=0, head=None)
    assert Image.open(grid).size[0] > 300
    rollout = result.render(tmp_path / "roll.png", head=None, rollout=True)
    assert rollout.exists()
    assert "hmi-data" in result.page() and "hmv-data" in result.page(matrix=True)  # over the image, or maps
    matrix = result.render(tmp_path / "matrix.png", layer=0, head=0, matrix=True)
    assert matrix.exists()
    with pytest.raises(HeadmapError, match="no unit"):
        plot_image_head(result, 0, 0, query="nope")


def test_saved_image_result_round_trips(digits_vit, digit_png, tmp_path):
    result = headmap.capture(digits_vit, image=digit_png)
    back = load_result(result.save(tmp_path / "five.safetensors"))
    assert back.source == result.source
    np.testing.assert_array_equal(back.source.patches.pixels, result.source.patches.pixels)
    np.testing.assert_array_equal(back.layer(1).weights, result.layer(1).weights)
    masked = result.mask(special=True)
    assert masked.source.tokens[0] == "p(0,0)" and masked.source.patches.prefix == ()


def test_text_pictures_refuse_image_helpers(minilm):
    with pytest.raises(HeadmapError, match="over text, not an image"):
        plot_image_head(headmap.capture(minilm, "A short text.", layers=[0]), 0, 0)


def test_cli_image(digit_png, tmp_path):
    run = [sys.executable, "-m", "headmap.cli"]
    out = tmp_path / "cli.png"
    done = subprocess.run(
        [*run, "render", "-m", "digits-vit", "--image", str(digit_png), "--rollout", "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "rollout" in done.stdout and out.exists()
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    done = subprocess.run(
        [*run, "render", "-m", "digits-vit", "--image", str(bad), "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and str(bad) in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_script_reproduces_the_weights(tmp_path):
    """The script, run again, gives the shipped weights bit for bit (same seed, same versions)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train_digits_vit.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "model.safetensors").read_bytes() == (SHIPPED / "model.safetensors").read_bytes()
    recorded = json.loads((SHIPPED / "metrics.json").read_text())
    assert json.loads((tmp_path / "metrics.json").read_text())["test_accuracy"] == recorded["test_accuracy"]
