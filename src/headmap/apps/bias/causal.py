"""The causal check: remove the heads that attend most to the name, and see whether the group gap moves.

**Which heads.** A head's *name attention* is the mean over all pairs of the average of its two
prompts' weight on the name: ``score[l, h] = mean_p (name[A_p, l, h] + name[B_p, l, h]) / 2``. The
``k`` captured heads with the largest score are ablated together (ties broken by layer, then
head order), with :func:`headmap.ablate` (``mode="zero"`` by default: the head's output is zero
before the output projection).

**What is measured.** Every prompt's output again under the ablation; per pair the new difference
``d'_p``; the change of the gap is ``mean(d' - d)``, with the paired statistics of
:mod:`headmap.apps.bias.stats` (``x = d'``, ``y = d``).

**Controls.** The same for ``controls`` sets of ``k`` heads drawn at random (seeded) from the
captured heads outside the top ``k``: ablating any ``k`` heads moves outputs, so the top heads'
change means something only beside what random heads do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from headmap.analysis import ablate
from headmap.apps.bias.outputs import score_prompts
from headmap.apps.bias.pairs import BiasPrompt
from headmap.attribution.target import Target
from headmap.capture.discovery import discover
from headmap.capture.plan import LayerSpec, resolve_layers
from headmap.capture.tap import CapturePath
from headmap.errors import HeadmapError
from headmap.models import LoadedModel

HeadList = list[tuple[str, int]]


def name_scores(name: np.ndarray, a_index: np.ndarray, b_index: np.ndarray) -> np.ndarray:
    """``[layer, head]``: mean over pairs of the two prompts' average name attention (``name`` is
    ``[prompt, layer, head]``; pair ``p`` is prompts ``a_index[p]`` and ``b_index[p]``)."""
    return 0.5 * (name[a_index] + name[b_index]).mean(axis=0)


def top_cells(scores: np.ndarray, k: int) -> list[tuple[int, int]]:
    """The ``k`` (layer index, head index) cells with the largest score; ties by layer, then head."""
    flat = scores.ravel()
    order = sorted(range(flat.size), key=lambda i: (-float(flat[i]), i))[:k]
    return [divmod(i, scores.shape[1]) for i in order]


def control_cells(
    shape: tuple[int, int], exclude: Sequence[tuple[int, int]], k: int, count: int, seed: int
) -> list[list[tuple[int, int]]]:
    """``count`` sets of ``k`` distinct cells, each drawn uniformly from the cells not in ``exclude``.

    ``numpy.random.default_rng(seed)``; set ``i`` is ``rng.choice(candidates, k, replace=False)``,
    sorted, with ``candidates`` the remaining flat indices in order.
    """
    if count == 0:
        return []
    excluded = {a * shape[1] + b for a, b in exclude}
    candidates = np.array([i for i in range(shape[0] * shape[1]) if i not in excluded])
    if len(candidates) < k:
        raise HeadmapError(
            f"only {len(candidates)} heads lie outside the top {k}, too few for a control set of "
            f"{k}: capture more heads, lower k, or set controls to 0"
        )
    rng = np.random.default_rng(seed)
    sets = [np.sort(rng.choice(candidates, size=k, replace=False)) for _ in range(count)]
    return [[(int(i) // shape[1], int(i) % shape[1]) for i in chosen] for chosen in sets]


def named(cells: Sequence[tuple[int, int]], layers: Sequence[str], heads: Sequence[int]) -> HeadList:
    """Cells as ``(layer name, head number)`` pairs, for :func:`headmap.ablate` and the report."""
    return [(layers[a], int(heads[b])) for a, b in cells]


def check_ablatable(loaded: LoadedModel, layers: LayerSpec | Sequence[LayerSpec] | None) -> None:
    """Fail before any work when a chosen layer has no kernel output to gate (Bloom, DeBERTa, MPT)."""
    arch = discover(loaded.model)
    eager = [k.name for k in resolve_layers(arch, layers) if arch.sites[k].path is CapturePath.EAGER_WEIGHTS]
    if eager:
        raise HeadmapError(
            f"{loaded.name} computes the attention of {', '.join(eager[:3])} in its own eager code, so "
            "its heads cannot be ablated for the causal check: use a model whose attention goes "
            "through transformers' attention dispatch or torch SDPA"
        )


def ablated_outputs(
    loaded: LoadedModel,
    target: Target,
    prompts: Sequence[BiasPrompt],
    positions: Sequence[int | None],
    heads: HeadList,
    mode: str = "zero",
    batch_size: int = 8,
    tick: Callable[[int], None] | None = None,
) -> np.ndarray:
    """``[prompt]`` float64: every prompt's output with ``heads`` ablated together."""
    with ablate(loaded, heads, mode=mode):
        return score_prompts(loaded, target, prompts, positions, batch_size, tick)
