"""The per-text half of a corpus report: the :class:`~headmap.analysis.partials.Partial` of a group of texts.

One streamed forward per group gives, per text, the sums of every statistic (through
:class:`StatsCollector`, plus the next-token share) and, when asked, the head distances. Distances
need every head's rows of a text at once: a group holds at most ``budget_bytes`` of maps
(``layers x heads x rows x keys`` float32 per text), and a text too long for that on its own is
done in row chunks, one forward per chunk (each chunk adds its rows' sums, which is exact because
every statistic and every distance is a sum over query rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from headmap.analysis.corpus import CorpusText, encode_text
from headmap.analysis.diversity import js_pairs, js_row_sums
from headmap.analysis.partials import Partial, ReportSpec, pack_upper
from headmap.analysis.stats import StatsCollector
from headmap.capture import CapturePlan, stream
from headmap.capture.discovery import discover
from headmap.capture.engine import max_tokens
from headmap.capture.moments import RowMoments
from headmap.capture.recompute import Block
from headmap.models import LoadedModel
from headmap.result import LayerKey

DEFAULT_BUDGET_BYTES = 256 * 2**20


@dataclass
class CorpusCollector:
    """A capture consumer: :class:`StatsCollector` sums, next-token shares and, optionally, head distances."""

    diversity: bool = False
    keeps_scores: bool = True
    reduces_on_device: bool = True  # blocks are reduced on the layer's device (see capture.consumers)
    stats: StatsCollector = field(default_factory=lambda: StatsCollector(pool=False))
    plan: CapturePlan | None = None
    next_sums: dict[tuple[int, LayerKey], np.ndarray] = field(default_factory=dict)
    next_counts: dict[tuple[int, LayerKey], float] = field(default_factory=dict)
    js: dict[int, np.ndarray] = field(default_factory=dict)  # item -> [head, head]
    js_packed: list[np.ndarray] = field(default_factory=list)  # per packed batch, summed over its texts
    _maps: dict[int, torch.Tensor] = field(default_factory=dict)  # item -> [layer, head, row, key]
    _missing: dict[int, int] = field(default_factory=dict)  # item -> rows still to come over all layers
    # A packed batch's maps by layer until every layer has come: items -> {layer: [head, row, width]}.
    _batch_maps: dict[tuple[int, ...], dict[LayerKey, torch.Tensor]] = field(default_factory=dict)

    def begin(self, plan: CapturePlan) -> None:
        self.plan = plan
        self.stats.begin(plan)
        self.next_sums, self.next_counts, self.js, self._maps, self._missing = {}, {}, {}, {}, {}
        self.js_packed, self._batch_maps = [], {}

    @property
    def wants_moments(self) -> bool:
        return self.stats.fused

    @property
    def wants_maps(self) -> bool:
        """Distances need every head's whole rows: a packed batch's compiled kernel returns them with
        the moments; elsewhere they come as blocks (see :func:`headmap.capture.engine.takes_moments`)."""
        return self.diversity

    def js_sum(self) -> np.ndarray:
        """``[head, head]``: the distances summed over every text seen (zeros without distances)."""
        assert self.plan is not None
        n = len(self.plan.layers) * len(self.plan.heads)
        return sum((*self.js.values(), *self.js_packed), np.zeros((n, n)))

    def key_cells(self, item: int, key: LayerKey) -> tuple[int, int] | None:
        return self.stats.key_cells(item, key)

    def consume(self, item: int, key: LayerKey, start: int, block: Block) -> None:
        assert self.plan is not None
        self._next_share(item, key, self.stats.consume(item, key, start, block))
        if self.diversity:
            self._keep(item, key, start, block)

    def consume_moments(
        self, item: int, key: LayerKey, plan_index: torch.Tensor, moments: RowMoments
    ) -> None:
        value, count = self.stats.consume_moments(item, key, plan_index, moments)
        assert self.plan is not None
        sums = self.next_sums.setdefault((item, key), np.zeros(len(self.plan.heads)))
        sums += value
        self.next_counts[(item, key)] = self.next_counts.get((item, key), 0.0) + count

    def consume_packed(
        self,
        items: Sequence[int],
        key: LayerKey,
        counts: Sequence[int],
        moments: RowMoments,
        maps: torch.Tensor | None,
    ) -> None:
        """A packed batch's moments (and, for distances, its rows' weights) at once."""
        assert self.plan is not None
        sums, totals = self.stats.consume_packed(items, key, counts, moments)
        for i, item in enumerate(items):
            self.next_sums[(item, key)] = self.next_sums.get((item, key), 0.0) + sums[i, -1]
            self.next_counts[(item, key)] = self.next_counts.get((item, key), 0.0) + float(totals[i, -1])
        if self.diversity and maps is not None:
            held = self._batch_maps.setdefault(tuple(items), {})
            held[key] = maps
            if len(held) == len(self.plan.layers):
                del self._batch_maps[tuple(items)]
                stacked = torch.cat([held[k] for k in self.plan.layers])  # [layer * head, row, width]
                self.js_packed.append(js_pairs(stacked))  # the kernel skips each row's trailing zeros

    def _next_share(self, item: int, key: LayerKey, moments: RowMoments) -> None:
        """Weight on the token after the query, over the rows that have one (none for cross-attention)."""
        assert self.plan is not None
        sums = self.next_sums.setdefault((item, key), np.zeros(len(self.plan.heads)))
        self.next_counts.setdefault((item, key), 0.0)
        defined = ~moments.p_next[0].isnan()
        sums += moments.p_next[:, defined].sum(1).cpu().numpy()
        self.next_counts[(item, key)] += float(defined.sum())

    def _keep(self, item: int, key: LayerKey, start: int, block: Block) -> None:
        assert self.plan is not None
        plan = self.plan
        if item not in self._maps:
            rows, keys = len(plan.rows[item][key]), len(plan.key_tokens(item, key))
            self._maps[item] = torch.zeros(len(plan.layers), len(plan.heads), rows, keys)
            self._missing[item] = len(plan.layers) * rows
        n = len(block.rows)
        self._maps[item][plan.layers.index(key), :, start : start + n, : block.width] = block.weights
        self._missing[item] -= n
        if self._missing[item] == 0:
            maps = self._maps.pop(item)
            self.js[item] = js_row_sums(maps.reshape(-1, *maps.shape[2:]))

    def text_sums(self, item: int) -> tuple[np.ndarray, np.ndarray]:
        """``(sums [stat, layer, head], counts [stat, layer])`` of text ``item`` in CORPUS_STATS order."""
        assert self.plan is not None
        sums, counts = self.stats.totals(item)
        nxt = np.stack([self.next_sums[(item, k)] for k in self.plan.layers])[None]
        nxt_counts = np.array([[self.next_counts[(item, k)] for k in self.plan.layers]])
        return np.concatenate([sums, nxt]), np.concatenate([counts, nxt_counts])


def spec_keys(spec: ReportSpec) -> list[LayerKey]:
    return [LayerKey.parse(name) for name in spec.layers]


def maps_bytes(spec: ReportSpec, n_tokens: int) -> int:
    """Bytes one text's maps of every reported head take (what distances hold at once)."""
    return spec.n_heads * n_tokens * n_tokens * 4


def token_counts(loaded: LoadedModel, texts: Sequence[CorpusText]) -> list[int]:
    """Tokens of each text; a text the model cannot take fails here, naming its place in the corpus."""
    limit = max_tokens(loaded, discover(loaded.model))
    return [len(encode_text(loaded.tokenizer, text, limit)[0]) for text in texts]


def plan_groups(
    texts: Sequence[CorpusText], tokens: Sequence[int], spec: ReportSpec, batch_size: int, budget_bytes: int
) -> list[list[int]]:
    """Positions (into ``texts``) of each forward's group, in corpus order: at most ``batch_size`` texts
    and, with distances, at most ``budget_bytes`` of maps (a text over budget goes alone)."""
    groups: list[list[int]] = []
    current: list[int] = []
    held = 0
    for i, n in enumerate(tokens):
        cost = maps_bytes(spec, n) if spec.diversity else 0
        if current and (len(current) >= max(1, batch_size) or held + cost > budget_bytes):
            groups.append(current)
            current, held = [], 0
        current.append(i)
        held += cost
    if current:
        groups.append(current)
    return groups


def stats_partial(
    loaded: LoadedModel,
    texts: Sequence[CorpusText],
    spec: ReportSpec,
    tokens: Sequence[int],
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
) -> Partial:
    """The stats (and distance) partial of ``texts``, computed together in one forward where they fit."""
    keys, heads = spec_keys(spec), list(spec.heads)
    chunks: list[slice | None] = [None]
    if len(texts) == 1 and spec.diversity and maps_bytes(spec, tokens[0]) > budget_bytes:
        # A text too long for the budget on its own: rows in chunks, each chunk one forward.
        step = max(1, budget_bytes // (spec.n_heads * tokens[0] * 4))
        chunks = [slice(a, min(tokens[0], a + step)) for a in range(0, tokens[0], step)]
    sums = np.zeros((len(texts), len(spec.stats), len(keys), len(heads)))
    counts = np.zeros((len(texts), len(spec.stats), len(keys)))
    js_total = np.zeros((spec.n_heads, spec.n_heads)) if spec.diversity else None
    notes: dict[str, None] = {}
    for rows in chunks:
        collector = CorpusCollector(diversity=spec.diversity)
        plan = stream(
            loaded,
            [t.text for t in texts],
            collector,
            layers=keys,
            heads=heads,
            rows=rows,
            batch_size=len(texts),
        )
        for item in range(len(texts)):
            s, c = collector.text_sums(item)
            sums[item] += s
            counts[item] += c
        if js_total is not None:
            js_total += collector.js_sum()
        notes.update(dict.fromkeys((*plan.notes, *plan.kernel_notes())))
    return Partial(
        indices=np.array([t.index for t in texts], dtype=np.int64),
        digests=tuple(t.digest for t in texts),
        n_tokens=np.array(tokens, dtype=np.int64),
        sums=sums,
        counts=counts,
        js=None if js_total is None else pack_upper(js_total),
        notes=tuple(notes),
    )


def check_diversity(spec_layers: Sequence[LayerKey]) -> str | None:
    """Why distances cannot be computed for these layers (None when they can): every head compared
    must attend from and to the same tokens, which layers of different stacks do not."""
    sides = {(k.stack.query_side, k.stack.key_side) for k in spec_layers}
    if len(sides) > 1:
        return (
            "head distances skipped: encoder, decoder and cross-attention layers attend over different "
            "tokens; report the layers of one stack (e.g. --layers encoder.0,...) to compare their heads"
        )
    return None
