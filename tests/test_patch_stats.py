"""Patch statistics of image models (entropy, grid distance, CLS and register shares) against a direct
computation from the captured maps: tiny random ViT and DINOv2 with registers, and digits-vit on a folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits
from tiny_models import build_vision
from transformers import ViTImageProcessorPil

import headmap
from headmap.analysis.patch_stats import PATCH_STATS, PatchStats, image_files, patch_stats
from headmap.errors import HeadmapError
from headmap.tokens import PREFIX

ROOT = Path(__file__).resolve().parent.parent


def _picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 200, 32)[None, :, None] + rng.normal(0, 40, (32, 32, 3))
    base[4 + seed : 14 + seed, 10:22] = 250
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pictures")
    for seed in range(3):
        _picture(seed).save(path / f"pic{seed}.png")
    (path / "notes.txt").write_text("not an image")
    return path


def direct(model, paths) -> dict[str, np.ndarray]:
    """Every statistic from the whole captured maps, image by image, row by row, with numpy."""
    sums: dict[str, list] = {name: [] for name in PATCH_STATS}
    for path in paths:
        result = headmap.capture(model, image=path)
        cells = result.source.patches.cells
        labels = result.source.tokens
        patch = np.array([c != PREFIX for c in cells])
        coords = np.array(cells, dtype=np.float64)
        cls = [i for i, t in enumerate(labels) if t == "CLS"]
        regs = [i for i, t in enumerate(labels) if t.startswith("reg")]
        maps = np.stack([layer.weights for layer in result.layers]).astype(np.float64)  # [l, h, q, k]
        per = {
            "entropy": -(maps * np.log(maps)).sum(-1),
            "cls_share": maps[..., cls].sum(-1) if cls else None,
            "register_share": maps[..., regs].sum(-1) if regs else None,
            "prefix_share": maps[..., ~patch].sum(-1) if (~patch).any() else None,
        }
        dist = np.zeros(maps.shape[:3])
        for q in np.flatnonzero(patch):
            d = np.sqrt(((coords[patch] - coords[q]) ** 2).sum(-1))
            w = maps[:, :, q][..., patch]
            dist[:, :, q] = (w * d).sum(-1) / w.sum(-1)
        per["grid_distance"] = dist[:, :, patch]
        for name, value in per.items():
            if value is not None:
                sums[name].append(value)
    return {
        name: np.concatenate(v, axis=-1).mean(-1) if v else np.full((2, 4), np.nan)
        for name, v in sums.items()
    }


@pytest.fixture(scope="module")
def processor():
    return ViTImageProcessorPil(size={"height": 32, "width": 32})


@pytest.mark.parametrize("name", ["vit", "dinov2_with_registers", "deit"])
def test_every_statistic_matches_the_maps(name, processor, folder):
    model, _ = build_vision(name, processor)
    stats = patch_stats(model, folder, batch_size=2)
    assert stats.images == ("pic0.png", "pic1.png", "pic2.png") and stats.grids == ((4, 4),)
    want = direct(model, image_files(folder))
    for stat in PATCH_STATS:
        got = stats.stat(stat)
        assert got.shape == (2, 4)
        np.testing.assert_allclose(got, want[stat], atol=1e-6, err_msg=stat)
    assert np.isnan(stats.register_share).all() == (name != "dinov2_with_registers")
    if name == "dinov2_with_registers":
        assert (stats.register_share > 0).all() and (stats.prefix_share > stats.register_share).all()
    # Random tiny models spread weight: entropies are positive and below log(units).
    assert (stats.entropy > 0).all() and (stats.entropy < np.log(stats.units[0]) + 1e-9).all()
    # The mean distance between two cells of a 4x4 grid lies between 0 and its diagonal.
    assert ((stats.grid_distance > 0) & (stats.grid_distance < np.sqrt(18))).all()


def test_a_head_subset_and_the_list_of_paths(processor, folder):
    model, _ = build_vision("vit", processor)
    whole = patch_stats(model, folder)
    some = patch_stats(model, image_files(folder)[:3], layers=[1], heads=[2, 0])
    assert [k.name for k in some.layers] == ["layer.1"] and some.heads == (2, 0)
    np.testing.assert_allclose(some.entropy, whole.entropy[1:, [2, 0]], atol=1e-9)


def test_empty_folders_and_bad_files_are_refused(tmp_path, processor):
    with pytest.raises(HeadmapError, match="no image in"):
        patch_stats(build_vision("vit", processor)[0], tmp_path)
    (tmp_path / "a.png").write_bytes(b"not a png")
    with pytest.raises(HeadmapError, match="cannot read"):
        patch_stats(build_vision("vit", processor)[0], tmp_path)


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory) -> Path:
    digits = load_digits()
    path = tmp_path_factory.mktemp("digits")
    for i in (1700, 1701, 1702, 1703):
        pixels = np.rint(digits.images[i] * (255 / 16)).astype(np.uint8)
        Image.fromarray(pixels, "L").resize((32, 32), Image.NEAREST).save(path / f"digit{i}.png")
    return path


@pytest.mark.slow
def test_digits_vit_over_a_folder(digit_folder, tmp_path):
    model = headmap.load("digits-vit")
    stats = headmap.patch_stats(model, digit_folder)
    assert isinstance(stats, PatchStats) and len(stats.images) == 4 and stats.grids == ((4, 4),)
    want = direct(model, image_files(digit_folder))
    for stat in ("entropy", "grid_distance", "cls_share", "prefix_share"):
        np.testing.assert_allclose(stats.stat(stat), want[stat], atol=1e-6, err_msg=stat)
    assert np.isnan(stats.register_share).all()  # digits-vit has a CLS and no registers
    table = stats.to_pandas()
    assert list(table.columns) == ["layer", "head", *PATCH_STATS] and len(table) == 3 * 4
    for suffix in (".json", ".html", ".png", ".parquet"):
        assert stats.save(tmp_path / f"s{suffix}").stat().st_size > 0
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["images"] == [f"digit{i}.png" for i in (1700, 1701, 1702, 1703)]
    assert saved["heads"][0]["register_share"] is None
    assert "grid_distance" in stats.summary()


@pytest.mark.slow
def test_cli_stats_over_images(digit_folder, tmp_path):
    out = tmp_path / "t.csv"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "headmap",
            "stats",
            "--model",
            "digits-vit",
            "--images",
            str(digit_folder),
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "4 images (4x4 patches)" in done.stdout and "cls_share" in done.stdout
    assert out.read_text().splitlines()[0] == "layer,head," + ",".join(PATCH_STATS)
