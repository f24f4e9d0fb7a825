"""The order in which heads are removed: by importance (recomputed per step), at random, by entropy.

Every order is a sequence of ``(layer, head)`` pairs, the first removed first; removing the first
``n`` of them is step ``n``. Three kinds:

- **importance** (Michel et al. 2019, the bertology recipe): head importance ``|d loss / d gate|``,
  l2-normalized per layer, is computed with the heads removed so far gated off; the least important
  remaining heads are removed until the next step's count is reached (steps of 10% of all heads by
  default), and importance is computed again. The order therefore depends on the step size.
- **random**: a permutation drawn from ``numpy.random.default_rng(seed)``, one per stated seed.
- **entropy**: the seed's "heads that are consistently firing" read as the *broadest* heads first:
  highest mean normalized entropy (``entropy / log(visible keys)``, 1 = uniform) over every query
  row of the corpus, measured once on the unpruned model. A head that spreads its attention evenly
  over whatever it is given averages its value vectors into nearly the same output for every token,
  so it is the one attention statistics would call least specific, hence first to go. This is a
  hypothesis drawn from attention alone; the curve tests it.

Every order keeps at least one head per layer (it skips a layer's last head): a layer without heads
has no attention module to run or capture, and transformers' attention code cannot run with none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from headmap.analysis.ablation import ablate
from headmap.analysis.importance import head_importance
from headmap.analysis.losses import Loss
from headmap.analysis.stats import STATS, StatsCollector
from headmap.capture import stream
from headmap.errors import HeadmapError
from headmap.models import LoadedModel
from headmap.result import LayerKey

Head = tuple[LayerKey, int]
STEP = 0.1


@dataclass(frozen=True)
class Order:
    """One removal order: ``heads`` first removed first; ``scores`` what it ranked them by, per step."""

    name: str  # "importance", "random", "entropy"
    heads: tuple[Head, ...]
    seed: int | None = None
    scores: tuple[np.ndarray, ...] = ()  # [layer, head] per importance computation; entropy: one array

    @property
    def label(self) -> str:
        return self.name if self.seed is None else f"{self.name} (seed {self.seed})"


def step_counts(total: int, layers: int, step: float = STEP, amount: float | None = None) -> list[int]:
    """Heads removed after each step: ``0, round(step * total), round(2 * step * total), ...``.

    With ``amount``, up to ``round(amount * total)``, which is the last step; without, every multiple
    of ``step`` that leaves at least one head in each layer.
    """
    if not 0 < step <= 1:
        raise HeadmapError(f"the step is a share of all heads in (0, 1], not {step}")
    most = total - layers
    target = most
    if amount is not None:
        if not 0 < amount < 1:
            raise HeadmapError(f"the amount is a share of all heads in (0, 1), not {amount}")
        target = round(amount * total)
        if target > most:
            raise HeadmapError(
                f"removing {amount:.0%} of the {total} heads ({target}) would empty a layer: at most "
                f"{most} ({most / total:.1%}) can go, one head staying in each layer"
            )
    counts: list[int] = []
    for k in range(int(1 / step + 1e-9) + 1):
        count = round(k * step * total)
        if count <= target and (not counts or count > counts[-1]):
            counts.append(count)
    if amount is not None and target > counts[-1]:
        counts.append(target)
    return counts


def _keep_one(
    ranked: Sequence[Head],
    heads_per_layer: dict[LayerKey, int],
    removed: Sequence[Head] = (),
    limit: int | None = None,
) -> list[Head]:
    """``ranked`` heads in order, skipping any that would be the last one left in its layer."""
    left = dict(heads_per_layer)
    for key, _ in removed:
        left[key] -= 1
    out: list[Head] = []
    for key, head in ranked:
        if limit is not None and len(out) >= limit:
            break
        if left[key] > 1:
            out.append((key, head))
            left[key] -= 1
    return out


def all_heads(heads_per_layer: dict[LayerKey, int]) -> list[Head]:
    return [
        (key, h)
        for key in sorted(heads_per_layer, key=lambda k: k.sort_key)
        for h in range(heads_per_layer[key])
    ]


def random_order(heads_per_layer: dict[LayerKey, int], seed: int) -> Order:
    """A uniformly random removal order from ``numpy.random.default_rng(seed)``."""
    heads = all_heads(heads_per_layer)
    permutation = np.random.default_rng(seed).permutation(len(heads))
    return Order("random", tuple(_keep_one([heads[i] for i in permutation], heads_per_layer)), seed=seed)


def ranked_order(
    name: str,
    scores: np.ndarray,
    keys: Sequence[LayerKey],
    heads_per_layer: dict[LayerKey, int],
    descending: bool,
) -> Order:
    """Heads ordered by ``scores`` ``[layer, head]`` (ties: lower layer, then lower head first)."""
    heads = all_heads(heads_per_layer)
    row = {key: i for i, key in enumerate(keys)}
    values = np.array([scores[row[k], h] for k, h in heads], dtype=np.float64)
    values = np.where(np.isnan(values), -np.inf if descending else np.inf, values)
    order = np.lexsort((np.arange(len(heads)), -values if descending else values))
    return Order(name, tuple(_keep_one([heads[i] for i in order], heads_per_layer)), scores=(scores,))


def entropy_scores(
    model: LoadedModel, texts: Sequence[str], keys: Sequence[LayerKey], batch_size: int = 8
) -> np.ndarray:
    """``[layer, head]``: mean normalized entropy over every query row (seeing 2+ keys) of ``texts``."""

    collector = StatsCollector(pool=False)
    plan = stream(model, list(texts), collector, layers=list(keys), batch_size=batch_size)
    at = STATS.index("entropy_norm")
    sums = counts = 0.0
    for item in range(len(plan.sources)):
        s, c = collector.totals(item)
        sums, counts = sums + s[at], counts + c[at]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(sums) / np.asarray(counts)[:, None]


def entropy_order(
    model: LoadedModel,
    texts: Sequence[str],
    keys: Sequence[LayerKey],
    heads_per_layer: dict[LayerKey, int],
    batch_size: int = 8,
) -> Order:
    """Broadest heads first (highest mean normalized entropy), see the module docstring."""
    return ranked_order(
        "entropy", entropy_scores(model, texts, keys, batch_size), keys, heads_per_layer, descending=True
    )


def importance_order(
    model: LoadedModel,
    texts: Sequence[str],
    counts: Sequence[int],
    keys: Sequence[LayerKey],
    heads_per_layer: dict[LayerKey, int],
    loss: Loss | None = None,
    batch_size: int = 8,
    on_done: Callable[[], None] | None = None,
) -> Order:
    """The iterative Michel et al. order: importance recomputed, with the heads removed so far gated
    off, before each step of ``counts`` (heads removed after each step, ``counts[0] == 0``)."""
    removed: list[Head] = []
    scores: list[np.ndarray] = []
    for target in counts[1:]:
        importance = _importance(model, texts, removed, loss, batch_size)
        gone = set(removed)
        row = {key: i for i, key in enumerate(importance.layers)}
        candidates = [h for h in all_heads(heads_per_layer) if h not in gone]
        values = np.array([importance.normalized[row[k], h] for k, h in candidates])
        ranked = [candidates[i] for i in np.lexsort((np.arange(len(candidates)), values))]
        removed += _keep_one(ranked, heads_per_layer, removed, limit=target - len(removed))
        scores.append(importance.normalized)
        if on_done is not None:
            on_done()
    return Order("importance", tuple(removed), scores=tuple(scores))


def _importance(
    model: LoadedModel, texts: Sequence[str], removed: Sequence[Head], loss: Loss | None, batch_size: int
):
    if not removed:
        return head_importance(model, list(texts), loss=loss, batch_size=batch_size)
    with ablate(model, list(removed), mode="zero"):
        return head_importance(model, list(texts), loss=loss, batch_size=batch_size)


__all__ = [
    "STEP",
    "Head",
    "Order",
    "all_heads",
    "entropy_order",
    "entropy_scores",
    "importance_order",
    "random_order",
    "ranked_order",
    "step_counts",
]
