"""Per-head statistics computed while streaming, without ever holding an ``N x N`` map.

Definitions (all means over the captured query rows of a text):

- ``entropy``: -sum_k a log a, in nats (Clark et al. 2019; broad above ~3.8 nats at n ~ 128).
- ``entropy_norm``: entropy / log(visible keys), over rows that see more than one key; 1 = uniform.
- ``distance``: sum_k a_k |q - k|, the expected distance in tokens from query to key.
- ``first_share``: weight on the first token (the usual sink; a sink head has > 0.3).
- ``special_share``: weight on special tokens ([CLS], [SEP], BOS, ...).
- ``confidence``: the row's largest weight (Voita et al. 2019), over rows of non-special tokens.
- ``prev_share`` / ``diag_share``: weight on the previous token / on the query token itself.

Distances and diagonals compare positions on one axis, so they are NaN for cross-attention.
Besides the table, each layer can get an overview (``overview_size``): the head-averaged map
max-pooled to at most that many cells a side, so that peaks survive the reduction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from headmap.analysis.head_stats import HeadStats
from headmap.analysis.row_sums import STATS, moment_sums, text_sums
from headmap.capture import CapturePlan, stream
from headmap.capture.encoding import Encoded
from headmap.capture.moments import RowMoments, block_moments, pool_keys
from headmap.capture.recompute import Block
from headmap.result import LayerKey, Side, Stack

if TYPE_CHECKING:
    pass


@dataclass
class _Accumulator:
    """Running sums over rows for one (text, layer), float64 so long inputs lose nothing."""

    sums: dict[str, np.ndarray]
    counts: dict[str, float]
    overview: torch.Tensor
    special_keys: torch.Tensor  # indices of special key tokens
    special_queries: torch.Tensor  # [query token] bool


@dataclass
class StatsCollector:
    """A capture consumer that reduces attention to per-head statistics and an overview map.

    With ``fused`` (the default) every layer that headmap's fused kernel can compute exactly
    (:mod:`headmap.capture.fused`) arrives as per-row moments from one pass that also produces the
    model's attention output; other layers arrive as recomputed blocks. Both give the same
    statistics (tested to float32 rounding).
    """

    overview_size: int = 256
    keeps_scores: bool = True
    reduces_on_device: bool = True  # blocks are reduced on the layer's device (see capture.consumers)
    plan: CapturePlan | None = None
    _acc: dict[tuple[int, LayerKey], _Accumulator] = field(default_factory=dict)
    _specials: dict[tuple[int, Side, bool], torch.Tensor] = field(default_factory=dict)
    _packed_rows: dict[tuple[object, ...], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    pool: bool = True
    """False skips the overview maps (corpus reports read only the sums, see :meth:`totals`)."""
    fused: bool = True
    """False takes the exact path for every layer: the model's own kernel, then recomputation."""

    @property
    def wants_moments(self) -> bool:
        return self.fused

    def begin(self, plan: CapturePlan) -> None:
        self.plan, self._acc, self._specials, self._packed_rows = plan, {}, {}, {}

    def _cells(self, item: int, key: LayerKey) -> tuple[int, int]:
        assert self.plan is not None
        n_rows, n_keys = len(self.plan.rows[item][key]), len(self.plan.key_tokens(item, key))
        return math.ceil(n_rows / self.overview_size), math.ceil(n_keys / self.overview_size)

    def key_cells(self, item: int, key: LayerKey) -> tuple[int, int] | None:
        if not self.pool:
            return None
        assert self.plan is not None
        key_cell = self._cells(item, key)[1]
        return key_cell, math.ceil(len(self.plan.key_tokens(item, key)) / key_cell)

    def _accumulator(self, item: int, key: LayerKey) -> _Accumulator:
        acc = self._acc.get((item, key))
        if acc is None:
            acc = self._acc[(item, key)] = self._new(item, key)
        return acc

    def consume(self, item: int, key: LayerKey, start: int, block: Block) -> RowMoments:
        """Add a block's rows; returns their moments, for consumers that build on this one."""
        assert self.plan is not None
        acc = self._accumulator(item, key)
        n_keys = len(self.plan.key_tokens(item, key))
        moments = block_moments(block, acc.special_keys, key.stack is Stack.CROSS, n_keys)
        self._add(acc, key, moments)
        if self.pool:
            cells = self._cells(item, key)
            pooled = pool_keys(block.weights.mean(0), cells[1], acc.overview.shape[1])
            self._pool(acc, torch.arange(start, start + len(block.rows)) // cells[0], pooled)
        return moments

    def consume_moments(
        self, item: int, key: LayerKey, plan_index: torch.Tensor, moments: RowMoments
    ) -> tuple[np.ndarray, float]:
        """Add the rows' moments; returns their next_share sums ``[head]`` and row count (for consumers
        that build on this one)."""
        acc = self._accumulator(item, key)
        following = self._add(acc, key, moments)
        if self.pool and moments.pooled is not None:
            self._pool(acc, plan_index // self._cells(item, key)[0], moments.pooled)
        return following

    def consume_packed(
        self,
        items: Sequence[int],
        key: LayerKey,
        counts: Sequence[int],
        moments: RowMoments,
        maps: torch.Tensor | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """A packed batch's moments at once (``counts[i]`` rows of ``items[i]``, one text after
        another); returns every text's sums ``[text, stat, head]`` (STATS, then next_share) and
        counts, for consumers that build on this one."""
        accs = [self._accumulator(item, key) for item in items]
        # The rows' texts and special queries are the same for every layer of a stack: made once.
        layout = (tuple(items), tuple(counts), key.stack)
        if layout not in self._packed_rows:
            bounds = np.cumsum([0, *counts])
            special = [a.special_queries[moments.rows[bounds[i] : bounds[i + 1]]] for i, a in enumerate(accs)]
            self._packed_rows[layout] = (
                torch.repeat_interleave(torch.arange(len(items)), torch.tensor(counts)),
                torch.cat(special),
            )
        text_of_row, special_rows = self._packed_rows[layout]
        sums, totals = text_sums(moments, text_of_row, len(items), special_rows)
        for i, acc in enumerate(accs):
            for j, name in enumerate(STATS):
                acc.sums[name] += sums[i, j]
                acc.counts[name] += totals[i, j]
        return sums, totals

    def _add(self, acc: _Accumulator, key: LayerKey, moments: RowMoments) -> tuple[np.ndarray, float]:
        """Add the rows' sums to ``acc``; returns the next_share sums, which no statistic here keeps."""
        found = moment_sums(moments, key.stack is Stack.CROSS, acc.special_queries)
        for name in STATS:
            value, count = found[name]
            acc.sums[name] += value
            acc.counts[name] += count
        return found["next_share"]

    def _new(self, item: int, key: LayerKey) -> _Accumulator:
        assert self.plan is not None
        heads = len(self.plan.heads_of(key))
        overview = torch.zeros(0)
        if self.pool:
            cr, ck = self._cells(item, key)
            rows, keys = len(self.plan.rows[item][key]), len(self.plan.key_tokens(item, key))
            overview = torch.zeros(math.ceil(rows / cr), math.ceil(keys / ck))
        return _Accumulator(
            {n: np.zeros(heads) for n in STATS},
            {n: 0.0 for n in STATS},
            overview,
            special_keys=self._special(item, key.stack.key_side, keys=True),
            special_queries=self._special(item, key.stack.query_side, keys=False),
        )

    def _special(self, item: int, side: Side, keys: bool) -> torch.Tensor:
        """Text ``item``'s special tokens on ``side``: indices (``keys``) or a ``[token]`` mask, made once."""
        assert self.plan is not None
        found = self._specials.get((item, side, keys))
        if found is None:
            special = self.plan.side_tokens(item, side).special
            chosen = [i for i, s in enumerate(special) if s] if keys else list(special)
            found = torch.tensor(chosen, dtype=torch.long if keys else torch.bool)
            self._specials[(item, side, keys)] = found
        return found

    @staticmethod
    def _pool(acc: _Accumulator, row_cells: torch.Tensor, pooled: torch.Tensor) -> None:
        """Fold ``pooled`` ``[row, key_cell]`` into the overview, rows max-pooled into ``row_cells``."""
        acc.overview.scatter_reduce_(0, row_cells[:, None].expand_as(pooled), pooled.float().cpu(), "amax")

    def totals(self, item: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw running sums of text ``item``: ``(sums [stat, layer, head], counts [stat, layer])``.

        ``sums`` adds each statistic over the text's captured rows (float64) and ``counts`` is the
        number of rows each sum is over, both in :data:`STATS` and ``plan.layers`` order; the
        statistic is ``sums / counts``. Sums over disjoint row sets (or texts) simply add, which is
        what corpus reports rely on.
        """
        assert self.plan is not None
        accs = [self._acc[(item, key)] for key in self.plan.layers]
        sums = np.stack(
            [
                np.stack([self._padded(key, a.sums[name]) for key, a in zip(self.plan.layers, accs)])
                for name in STATS
            ]
        ).astype(np.float64)
        counts = np.array([[a.counts[name] for a in accs] for name in STATS], dtype=np.float64)
        return sums, counts

    def _padded(self, key: LayerKey, values: np.ndarray) -> np.ndarray:
        """``values`` of the layer's own heads placed at the plan's heads, NaN where a layer lacks one
        (the layers of a pruned model have different head counts)."""
        assert self.plan is not None
        own = self.plan.heads_of(key)
        if own == self.plan.heads:
            return values
        out = np.full(len(self.plan.heads), np.nan)
        out[[self.plan.heads.index(h) for h in own]] = values
        return out

    def results(self) -> list[HeadStats]:
        assert self.plan is not None
        plan = self.plan
        out = []
        for item, tokens in enumerate(plan.sources):
            accs = [self._acc[(item, key)] for key in plan.layers]
            values = {
                name: np.stack(
                    [
                        self._padded(key, a.sums[name] / a.counts[name])
                        if a.counts[name]
                        else np.full(len(plan.heads), np.nan)
                        for key, a in zip(plan.layers, accs)
                    ]
                ).astype(np.float64)
                for name in STATS
            }
            out.append(
                HeadStats(
                    model=plan.model,
                    tokens=tokens,
                    layers=plan.layers,
                    heads=plan.heads,
                    overview=np.stack([a.overview.numpy() for a in accs])
                    if self.pool and _same_shape(accs)
                    else np.empty(0),
                    overview_cell=self._cells(item, plan.layers[0]) if self.pool else (0, 0),
                    notes=(*plan.notes, *plan.kernel_notes()),
                    **values,
                )
            )
        return out


def _same_shape(accs: list[_Accumulator]) -> bool:
    return len({tuple(a.overview.shape) for a in accs}) == 1


def collect_stats(
    model,
    text,
    *,
    fused: bool = True,
    overview_size: int | None = None,
    **capture_options,
) -> HeadStats | list[HeadStats]:
    """Statistics of every (or the asked) layers and heads of ``text``; see :func:`headmap.capture.capture`
    for the options. Memory stays bounded by one block of rows, whatever the input length.

    ``fused`` (default) computes each layer's attention output and statistics in one pass where
    that reproduces the model's kernel (float32, eval mode); ``fused=False`` lets the model's kernel
    run and recomputes the weights afterwards. ``HeadStats.notes`` says which was used.
    ``overview_size``: also keep each layer's head-mean map max-pooled to at most this many cells a
    side (``HeadStats.overview``); off by default, since it needs every weight of every row.
    """
    collector = StatsCollector(
        overview_size=overview_size or 256, pool=overview_size is not None, fused=fused
    )
    stream(model, text, collector, **capture_options)
    results = collector.results()
    return results[0] if isinstance(text, (str, Encoded)) else results


__all__ = ["STATS", "HeadStats", "StatsCollector", "collect_stats"]
