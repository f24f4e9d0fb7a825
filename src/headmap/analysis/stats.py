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
Besides the table, each layer gets an overview: the head-averaged map max-pooled to at most
``overview_size`` cells a side, so that peaks survive the reduction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from headmap.capture import CapturePlan
from headmap.errors import HeadmapError
from headmap.capture.recompute import Block
from headmap.result import CAUSATION_WARNING, LayerKey, Stack
from headmap.tokens import Tokens

STATS = ("entropy", "entropy_norm", "distance", "first_share", "special_share", "confidence", "prev_share", "diag_share")


@dataclass(frozen=True)
class HeadStats:
    """Statistics of every captured head of one text. Each array is ``[layer, head]``."""

    model: str
    tokens: Tokens
    layers: tuple[LayerKey, ...]
    heads: tuple[int, ...]
    entropy: np.ndarray
    entropy_norm: np.ndarray
    distance: np.ndarray
    first_share: np.ndarray
    special_share: np.ndarray
    confidence: np.ndarray
    prev_share: np.ndarray
    diag_share: np.ndarray
    overview: np.ndarray  # [layer, row_cell, key_cell], head-averaged and max-pooled
    overview_cell: tuple[int, int]  # (rows, keys) of the input per overview cell

    def stat(self, name: str) -> np.ndarray:
        """The ``[layer, head]`` array of a statistic by name (one of :data:`STATS`)."""
        if name not in STATS:
            raise HeadmapError(f"unknown statistic {name!r}: choose from {', '.join(STATS)}")
        return getattr(self, name)

    def rows(self) -> list[dict[str, object]]:
        """One record per (layer, head), for tables and files."""
        out = []
        for li, key in enumerate(self.layers):
            for hi, head in enumerate(self.heads):
                record: dict[str, object] = {"layer": key.name, "head": head}
                record.update({name: float(self.stat(name)[li, hi]) for name in STATS})
                out.append(record)
        return out

    def format_table(self) -> str:
        header = f"{'layer':>9} {'head':>4} " + " ".join(f"{n:>13}" for n in STATS)
        lines = [header]
        for r in self.rows():
            lines.append(f"{r['layer']:>9} {r['head']:>4} " + " ".join(f"{r[n]:>13.4f}" for n in STATS))
        lines.append(f"# {len(self.tokens)} tokens, model {self.model}. {CAUSATION_WARNING}")
        return "\n".join(lines)

    def save(self, path: str | Path) -> Path:
        """Write the table as ``.csv``, ``.json`` or ``.parquet`` (the last needs pyarrow)."""
        from headmap.analysis.stats_io import save_stats

        return save_stats(self, path)

    def _repr_html_(self) -> str:
        import html

        head = "".join(f"<th>{html.escape(n)}</th>" for n in ("layer", "head", *STATS))
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(r[c]) if c in ('layer', 'head') else f'{r[c]:.3f}')}</td>"
                             for c in ("layer", "head", *STATS)) + "</tr>"
            for r in self.rows()
        )
        return (f"<p>{html.escape(self.model)}: {len(self.tokens)} tokens</p><table><tr>{head}</tr>{body}</table>"
                f"<p><em>{html.escape(CAUSATION_WARNING)}</em></p>")


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
    """A capture consumer that reduces every block to per-head statistics and an overview map."""

    overview_size: int = 256
    keeps_scores: bool = True
    plan: CapturePlan | None = None
    _acc: dict[tuple[int, LayerKey], _Accumulator] = field(default_factory=dict)
    pool: bool = True
    """False skips the overview maps (corpus reports read only the sums, see :meth:`totals`)."""

    def begin(self, plan: CapturePlan) -> None:
        self.plan, self._acc = plan, {}

    def _cells(self, item: int, key: LayerKey) -> tuple[int, int]:
        assert self.plan is not None
        n_rows, n_keys = len(self.plan.rows[item][key]), len(self.plan.key_tokens(item, key))
        return math.ceil(n_rows / self.overview_size), math.ceil(n_keys / self.overview_size)

    def consume(self, item: int, key: LayerKey, start: int, block: Block) -> None:
        assert self.plan is not None
        acc = self._acc.get((item, key))
        if acc is None:
            acc = self._acc[(item, key)] = self._new(item, key)
        w = block.weights  # [head, row, key]
        for name, (value, count) in _block_sums(block, key, acc.special_keys, acc.special_queries).items():
            acc.sums[name] += value
            acc.counts[name] += count
        if self.pool:
            self._pool(acc, item, key, start, w)

    def _new(self, item: int, key: LayerKey) -> _Accumulator:
        assert self.plan is not None
        cr, ck = self._cells(item, key)
        shape = (math.ceil(len(self.plan.rows[item][key]) / cr), math.ceil(len(self.plan.key_tokens(item, key)) / ck))
        heads = len(self.plan.heads_of(key))
        keys, queries = self.plan.key_tokens(item, key), self.plan.query_tokens(item, key)
        return _Accumulator(
            {n: np.zeros(heads) for n in STATS}, {n: 0.0 for n in STATS}, torch.zeros(shape),
            special_keys=torch.tensor([i for i, s in enumerate(keys.special) if s], dtype=torch.long),
            special_queries=torch.tensor(queries.special, dtype=torch.bool),
        )

    def _pool(self, acc: _Accumulator, item: int, key: LayerKey, start: int, w: torch.Tensor) -> None:
        cr, ck = self._cells(item, key)
        mean = w.mean(0)  # [row, key]
        pooled = torch.zeros(mean.shape[0], acc.overview.shape[1])  # weights >= 0, so 0 is a safe floor
        full = mean.shape[1] // ck
        if full:
            pooled[:, :full] = mean[:, : full * ck].view(mean.shape[0], full, ck).amax(-1)
        if mean.shape[1] > full * ck:
            pooled[:, full] = mean[:, full * ck :].amax(-1)
        cells = torch.arange(start, start + mean.shape[0]) // cr
        acc.overview.scatter_reduce_(0, cells[:, None].expand_as(pooled), pooled, "amax")

    def totals(self, item: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw running sums of text ``item``: ``(sums [stat, layer, head], counts [stat, layer])``.

        ``sums`` adds each statistic over the text's captured rows (float64) and ``counts`` is the
        number of rows each sum is over, both in :data:`STATS` and ``plan.layers`` order; the
        statistic is ``sums / counts``. Sums over disjoint row sets (or texts) simply add, which is
        what corpus reports rely on.
        """
        assert self.plan is not None
        accs = [self._acc[(item, key)] for key in self.plan.layers]
        sums = np.stack([np.stack([self._padded(key, a.sums[name]) for key, a in zip(self.plan.layers, accs)])
                         for name in STATS]).astype(np.float64)
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
                name: np.stack([self._padded(key, a.sums[name] / a.counts[name]) if a.counts[name]
                                else np.full(len(plan.heads), np.nan) for key, a in zip(plan.layers, accs)]
                               ).astype(np.float64)
                for name in STATS
            }
            out.append(HeadStats(
                model=plan.model, tokens=tokens, layers=plan.layers, heads=plan.heads,
                overview=np.stack([a.overview.numpy() for a in accs]) if _same_shape(accs) else np.empty(0),
                overview_cell=self._cells(item, plan.layers[0]), **values,
            ))
        return out


def _same_shape(accs: list[_Accumulator]) -> bool:
    return len({tuple(a.overview.shape) for a in accs}) == 1


def _block_sums(block: Block, key: LayerKey, special_keys: torch.Tensor,
                special_queries: torch.Tensor) -> dict[str, tuple[np.ndarray, float]]:
    """Per-head sums over the block's rows, with the number of rows each statistic averages over."""
    w, rows, width = block.weights, block.rows, block.width
    assert block.scores is not None
    n_rows = len(rows)
    # entropy = logsumexp(s) - sum p s, and logsumexp(s) = max s - log(max p): no log over the block.
    p_max = w.amax(-1)  # [head, row]
    weighted = torch.linalg.vecdot(w, block.scores)  # [head, row]
    entropy = (block.scores_max.double() - p_max.double().log() - weighted.double()).clamp_(min=0)
    out: dict[str, tuple[np.ndarray, float]] = {"entropy": (entropy.sum(1).numpy(), n_rows)}
    broad = block.visible > 1
    log_visible = block.visible.clamp(min=2).double().log()
    out["entropy_norm"] = ((entropy / log_visible)[:, broad].sum(1).numpy(), float(broad.sum()))
    out["first_share"] = (w[:, :, 0].double().sum(1).numpy(), n_rows)
    special = special_keys[special_keys < width]
    out["special_share"] = (w[:, :, special].double().sum((1, 2)).numpy(), n_rows)
    plain_rows = ~special_queries[rows]
    if not plain_rows.any():
        plain_rows = torch.ones(n_rows, dtype=torch.bool)
    out["confidence"] = (p_max[:, plain_rows].double().sum(1).numpy(), float(plain_rows.sum()))
    heads = w.shape[0]
    if key.stack is Stack.CROSS:
        for name in ("distance", "prev_share", "diag_share"):
            out[name] = (np.zeros(heads), 0.0)
        return out
    positions = torch.arange(width, dtype=torch.float32)
    if block.causal:
        # Every key is at or before its row: sum a_k |q - k| = q - sum a_k k, a matrix-vector product.
        expected_key = torch.matmul(w, positions)  # [head, row]
        out["distance"] = ((rows.double()[None, :] - expected_key.double()).sum(1).numpy(), n_rows)
    else:
        distance = (rows[:, None].float() - positions[None, :]).abs_()  # [row, key]
        out["distance"] = (torch.einsum("hrk,rk->h", w, distance).double().numpy(), n_rows)
    r_idx = torch.arange(n_rows)
    diag_ok = rows < width
    out["diag_share"] = (w[:, r_idx[diag_ok], rows[diag_ok]].double().sum(1).numpy(), n_rows)
    prev_ok = (rows >= 1) & (rows - 1 < width)
    out["prev_share"] = (w[:, r_idx[prev_ok], rows[prev_ok] - 1].double().sum(1).numpy(), float((rows >= 1).sum()))
    return out


def collect_stats(model, text, **capture_options) -> HeadStats | list[HeadStats]:  # type: ignore[no-untyped-def]
    """Statistics of every (or the asked) layers and heads of ``text``; see :func:`headmap.capture.capture`
    for the options. Memory stays bounded by one block of rows, whatever the input length."""
    from headmap.capture import stream

    collector = StatsCollector(overview_size=capture_options.pop("overview_size", 256))
    stream(model, text, collector, **capture_options)
    results = collector.results()
    return results[0] if isinstance(text, str) else results


__all__ = ["STATS", "HeadStats", "StatsCollector", "collect_stats"]
