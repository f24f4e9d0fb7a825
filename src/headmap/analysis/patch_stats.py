"""Per-head statistics of an image model over a folder of images (:func:`patch_stats`).

Definitions, per (layer, head), means over every query row of every image (each image's own
prefix tokens and patch grid):

- ``entropy``: -sum_k a log a over every key (prefix tokens and patches), in nats.
- ``grid_distance``: for a patch's row, the expected Euclidean distance, in patches, from the query
  patch to the key patches, sum_k a_k |q - k| / sum_k a_k over patch keys only; prefix tokens
  (CLS, registers) have no place in the grid, so their rows and their weights are left out.
- ``cls_share``: weight on the CLS token (NaN for a model without one, e.g. SigLIP).
- ``register_share``: weight on the register tokens together (NaN without registers, e.g. ViT).
- ``prefix_share``: weight on every prefix token together (CLS, DeiT's distillation token, registers).

Sums are kept in float64 and add over images, so a folder of any size needs one image's block of
rows at a time, never its maps.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from headmap.analysis.head_table import HeadTable
from headmap.capture import CapturePlan, stream
from headmap.capture.recompute import Block
from headmap.errors import HeadmapError
from headmap.models import LoadedModel
from headmap.render.report import Report, check_writable, json_number, write
from headmap.result import CAUSATION_WARNING, LayerKey
from headmap.tokens import PREFIX, Tokens

if TYPE_CHECKING:
    pass

#: The statistics of :class:`PatchStats`, in table order.
PATCH_STATS = ("entropy", "grid_distance", "cls_share", "register_share", "prefix_share")
#: What each statistic is, for figure titles.
PATCH_LABELS = {
    "entropy": "mean entropy (nats)",
    "grid_distance": "mean distance in the patch grid (patches)",
    "cls_share": "mean weight on CLS",
    "register_share": "mean weight on the registers",
    "prefix_share": "mean weight on the prefix tokens",
}
#: File suffixes read from a folder of images.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

__all__ = ["PATCH_STATS", "PatchStats", "PatchStatsCollector", "image_files", "patch_stats"]


def image_files(images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The image files of a folder (sorted by name, image suffixes only), or the given paths."""
    if isinstance(images, (str, os.PathLike)):
        folder = Path(images)
        if not folder.is_dir():
            return [folder]
        found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise HeadmapError(
                f"no image in {folder}: give a folder holding {', '.join(IMAGE_SUFFIXES)} files"
            )
        return found
    paths = [Path(p) for p in images]
    if not paths:
        raise HeadmapError("no image given: pass a folder or at least one image path")
    return paths


@dataclass(frozen=True)
class _Layout:
    """One image's units as the statistics need them: the patch cells and the prefix tokens' roles."""

    coords: torch.Tensor  # [unit, 2] float64 grid (row, col); prefix rows are unused
    is_patch: torch.Tensor  # [unit] bool
    cls: torch.Tensor  # indices of the CLS token (none or one)
    registers: torch.Tensor  # indices of the register tokens
    prefix: torch.Tensor  # indices of every prefix token

    @classmethod
    def of(cls, tokens: Tokens) -> _Layout:
        if tokens.patches is None:
            raise HeadmapError("patch statistics need an image model's capture: give image files")
        cells = tokens.patches.cells
        labels = tokens.tokens
        prefix = [i for i, c in enumerate(cells) if c == PREFIX]
        return cls(
            coords=torch.tensor(cells, dtype=torch.float64),
            is_patch=torch.tensor([c != PREFIX for c in cells]),
            cls=torch.tensor([i for i in prefix if labels[i] == "CLS"], dtype=torch.long),
            registers=torch.tensor([i for i in prefix if labels[i].startswith("reg")], dtype=torch.long),
            prefix=torch.tensor(prefix, dtype=torch.long),
        )


@dataclass
class PatchStatsCollector:
    """A capture consumer that adds every block's rows to per-(layer, head) sums of :data:`PATCH_STATS`."""

    keeps_scores: bool = False
    plan: CapturePlan | None = None
    sums: dict[str, np.ndarray] = field(default_factory=dict)  # stat -> [layer, head]
    counts: dict[str, np.ndarray] = field(default_factory=dict)  # stat -> [layer] rows summed
    _layouts: dict[int, _Layout] = field(default_factory=dict)

    def begin(self, plan: CapturePlan) -> None:
        self.plan, self._layouts = plan, {}
        shape = (len(plan.layers), len(plan.heads))
        self.sums = {name: np.zeros(shape) for name in PATCH_STATS}
        self.counts = {name: np.zeros(len(plan.layers)) for name in PATCH_STATS}

    def consume(self, item: int, key: LayerKey, start: int, block: Block) -> None:
        assert self.plan is not None
        layout = self._layouts.get(item)
        if layout is None:
            layout = self._layouts[item] = _Layout.of(self.plan.sources[item])
        n_keys = len(layout.is_patch)
        weights = torch.zeros(*block.weights.shape[:2], n_keys, dtype=torch.float64)
        weights[..., : block.width] = block.weights.to(torch.float64)  # [head, row, key]
        rows = block.rows
        layer = self.plan.layers.index(key)
        heads = [self.plan.heads.index(h) for h in self.plan.heads_of(key)]
        logs = torch.where(weights > 0, weights.log(), torch.zeros_like(weights))
        self._add("entropy", layer, heads, -(weights * logs).sum(-1), len(rows))
        if len(layout.cls):
            self._add("cls_share", layer, heads, weights[..., layout.cls].sum(-1), len(rows))
        if len(layout.registers):
            self._add("register_share", layer, heads, weights[..., layout.registers].sum(-1), len(rows))
        if len(layout.prefix):
            self._add("prefix_share", layer, heads, weights[..., layout.prefix].sum(-1), len(rows))
        patch_rows = layout.is_patch[rows]
        if patch_rows.any():
            keys = layout.coords[layout.is_patch]
            queries = layout.coords[rows[patch_rows]]
            distance = torch.cdist(queries, keys)  # [row, patch key]
            on_patches = weights[:, patch_rows][..., layout.is_patch]  # [head, row, patch key]
            expected = (on_patches * distance).sum(-1) / on_patches.sum(-1)
            self._add("grid_distance", layer, heads, expected, int(patch_rows.sum()))

    def _add(self, name: str, layer: int, heads: list[int], per_row: torch.Tensor, rows: int) -> None:
        self.sums[name][layer, heads] += per_row.sum(-1).numpy()
        self.counts[name][layer] += rows

    def result(self, names: Sequence[str], notes: Sequence[str] = ()) -> PatchStats:
        assert self.plan is not None
        plan = self.plan
        values = {}
        for name in PATCH_STATS:
            counts = self.counts[name][:, None]
            with np.errstate(invalid="ignore", divide="ignore"):
                values[name] = np.where(counts > 0, self.sums[name] / np.maximum(counts, 1), np.nan)
        grids = sorted({s.patches.grid for s in plan.sources if s.patches is not None})
        return PatchStats(
            model=plan.model,
            images=tuple(names),
            units=tuple(len(s) for s in plan.sources),
            grids=tuple(grids),
            layers=plan.layers,
            heads=plan.heads,
            notes=tuple(notes),
            **values,
        )


@dataclass(frozen=True)
class PatchStats(HeadTable, Report):
    """Statistics of every captured head of an image model over a set of images; arrays ``[layer, head]``.

    The report contract (:class:`~headmap.render.report.Report`): ``save`` writes ``.json``,
    ``.html``, pictures (``stat=`` picks the statistic) and ``.parquet`` (:meth:`to_pandas`).
    """

    model: str
    images: tuple[str, ...]
    units: tuple[int, ...]  # units (prefix tokens and patches) of each image
    grids: tuple[tuple[int, int], ...]  # the patch grids the images came in
    layers: tuple[LayerKey, ...]
    heads: tuple[int, ...]
    entropy: np.ndarray
    grid_distance: np.ndarray
    cls_share: np.ndarray
    register_share: np.ndarray
    prefix_share: np.ndarray
    notes: tuple[str, ...] = ()

    tabular: ClassVar[bool] = True
    statistics: ClassVar[tuple[str, ...]] = PATCH_STATS
    labels: ClassVar[Mapping[str, str]] = PATCH_LABELS

    def to_dict(self) -> dict[str, Any]:
        """The table as records (NaN, a share of a token the model lacks, as None), with the images."""
        return {
            "model": self.model,
            "images": list(self.images),
            "units": list(self.units),
            "grids": [list(g) for g in self.grids],
            "layers": [k.name for k in self.layers],
            "head_numbers": list(self.heads),
            "statistics": list(PATCH_STATS),
            "notes": list(self.notes),
            "warning": CAUSATION_WARNING,
            "heads": [
                {k: json_number(v) if isinstance(v, float) else v for k, v in record.items()}
                for record in self.rows()
            ],
        }

    def _what(self) -> str:
        grids = ", ".join(f"{r}x{c}" for r, c in self.grids)
        return f"{len(self.images)} images ({grids} patches)"

    def summary(self, top: int = 3) -> str:
        """A few lines: per statistic, the ``top`` heads with the highest value (NaN cells skipped)."""
        lines = [f"{self.model}: {self._what()}; the {top} highest heads per statistic (layer/head value):"]
        width = max(map(len, PATCH_STATS))
        for name in PATCH_STATS:
            values = self.stat(name).ravel()
            best = [i for i in np.argsort(-values, kind="stable") if np.isfinite(values[i])][:top]
            cells = "   ".join(
                f"{self.layers[i // len(self.heads)].name}/{self.heads[i % len(self.heads)]} {values[i]:.4f}"
                for i in best
            )
            lines.append(f"  {name:<{width}}  {cells or '(not defined for this model)'}")
        lines.append(f"# the whole table: to_pandas(), or save it. {CAUSATION_WARNING}")
        return "\n".join(lines)

    def save(self, path: str | Path, **options: Any) -> Path:
        """Write by extension (see :meth:`formats`), and ``.csv``: the table."""
        path = Path(path)
        if path.suffix.lower() != ".csv":
            return write(self, path, **options)
        check_writable(path)
        self.to_pandas().to_csv(path, index=False, na_rep="")
        return path

    def __repr__(self) -> str:
        return self.summary()


def patch_stats(
    model: LoadedModel | str,
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    layers: Any = None,
    heads: int | Sequence[int] | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> PatchStats:
    """Per-head patch statistics (:data:`PATCH_STATS`) of an image model, averaged over every image of
    a folder (or a list of image paths); see :func:`headmap.capture.capture` for the options."""
    paths = image_files(images)
    collector = PatchStatsCollector()
    plan = stream(
        model, paths, collector, layers=layers, heads=heads, batch_size=batch_size, progress=progress
    )
    return collector.result([p.name for p in paths], plan.notes)
