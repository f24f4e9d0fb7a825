"""``headmap.prune``: order heads, measure quality as they go, and cut them out of the model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from headmap.analysis.corpus import as_corpus
from headmap.analysis.losses import Loss, LossFn, default_loss, resolve_loss
from headmap.apps.prune.curve import Curve, measure_curve
from headmap.apps.prune.order import Order, entropy_order, importance_order, random_order, step_counts
from headmap.apps.prune.physical import (
    layer_keys,
    max_difference,
    measure_latency,
    parameter_count,
    prune_heads,
)
from headmap.apps.prune.pruning import Pruning
from headmap.apps.prune.quality import Quality, retrieval_loss
from headmap.apps.prune.report import PruneReport
from headmap.apps.prune.save import save_pruned
from headmap.capture.discovery import discover
from headmap.errors import HeadmapError
from headmap.models import LoadedModel, load
from headmap.models.pruned import current_layouts, family_of
from headmap.result import LayerKey

ORDERS = ("importance", "entropy", "random")
SEEDS = (0, 1, 2)
HELDOUT = Path("corpora") / "heldout.txt"


def default_heldout() -> Path:
    """``corpora/heldout.txt`` of the working folder, else of the source tree headmap runs from."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[4]):
        if (root / HELDOUT).is_file():
            return root / HELDOUT
    raise HeadmapError("no held-out texts: pass heldout= (CLI: --heldout FILE), one text per line")


class _Bar:
    def __init__(self, enabled: bool, total: int) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="prune", unit="step")

    def step(self, what: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(what)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def prune(
    model: LoadedModel | str,
    texts: Sequence[str] | str | Path,
    *,
    amount: float | None = None,
    curve: bool = False,
    order: str = "importance",
    seeds: Sequence[int] = SEEDS,
    heldout: Sequence[str] | str | Path | None = None,
    step: float = 0.1,
    loss: str | LossFn | Loss | None = None,
    max_texts: int | None = None,
    batch_size: int = 8,
    out: str | Path | None = None,
    latency_repeats: int = 5,
    progress: bool = False,
) -> PruneReport:
    """Prune attention heads: ``amount`` (a share of all heads) cut out physically, and/or the ``curve``.

    ``texts`` (a list or a corpus path) rank the heads; ``heldout`` texts (default ``corpora/heldout.txt``)
    measure quality. ``order``: which order the cut follows (``"importance"``, ``"entropy"``, ``"random"``,
    the last with ``seeds[0]``). ``curve=True`` measures all three orders (random once per seed) in
    steps of ``step``. ``out`` saves the cut model as a safetensors folder. ``loss``: the importance
    loss (default: next-token cross-entropy for decoders, self-retrieval for sentence encoders).
    Ctrl-C while the orders are measured returns the report of those finished (``interrupted=True``,
    nothing cut).
    """
    if amount is None and not curve:
        raise HeadmapError("nothing to do: give amount= (a share of heads to cut) and/or curve=True")
    if out is not None and amount is None:
        raise HeadmapError(
            "saving a cut model needs the amount of heads to cut: give amount= (CLI: --amount)"
        )
    if order not in ORDERS:
        raise HeadmapError(f"unknown order {order!r}: use one of {', '.join(ORDERS)}")
    if not seeds:
        raise HeadmapError("random orders need at least one seed")
    loaded = load(model) if isinstance(model, str) else model
    if amount is not None:
        family_of(loaded.model)  # an unsupported architecture fails before any work
    arch = discover(loaded.model)
    if arch.is_encoder_decoder:
        raise HeadmapError(
            f"{loaded.name} is an encoder-decoder model: headmap prune measures decoders (perplexity) "
            "and encoders (embeddings) only"
        )
    if arch.layer_heads:
        raise HeadmapError(
            f"{loaded.name} is already pruned (its layers have different head counts): prune the "
            "original model instead, with the larger amount"
        )
    corpus = [t.text for t in as_corpus(texts, max_texts)]
    held_source = default_heldout() if heldout is None else heldout
    held = [t.text for t in as_corpus(held_source)]
    keys = layer_keys(loaded.model) if amount is not None else sorted(arch.sites, key=lambda k: k.sort_key)
    setup = _Setup(loaded, corpus, keys, {key: arch.num_heads for key in keys}, batch_size)
    total = len(keys) * arch.num_heads
    cut_counts = step_counts(total, len(keys), step, amount) if amount is not None else []
    counts = step_counts(total, len(keys), step) if curve else cut_counts
    quality = Quality(loaded, held)
    setup.loss = _default_loss(loaded, corpus) if loss is None else resolve_loss(loaded.model, loss)
    wanted = [
        (name, seed)
        for name in (ORDERS if curve else (order,))
        for seed in ((*seeds,) if name == "random" and curve else (seeds[0],))
    ]
    steps = len(counts) - 1
    bar = _Bar(
        progress, steps * len(wanted) + (steps if any(name == "importance" for name, _ in wanted) else 0)
    )
    curves: list[Curve] = []
    notes: list[str] = []
    try:
        baseline = quality.measure()
        for name, seed in wanted:
            made = setup.order(name, seed, counts, bar)
            curves.append(measure_curve(quality, made, counts, baseline, lambda: bar.step("quality")))
    except KeyboardInterrupt:
        if not curves:
            raise
        notes.append(
            f"Interrupted: only {', '.join(c.order.label for c in curves)} measured; nothing was cut."
        )
    finally:
        bar.close()
    pruning = cut = None
    if amount is not None and not notes:
        cut_order = _reuse(curves, order, seeds[0], cut_counts) or setup.order(
            order, seeds[0], cut_counts, _Bar(False, 0)
        )
        pruning, cut = _cut(loaded, held, quality, cut_order, cut_counts[-1], amount, latency_repeats)
        if out is not None:
            pruning = replace(pruning, folder=str(out))
    report = PruneReport(
        model=loaded.name,
        layers=tuple(k.name for k in keys),
        heads_per_layer=arch.num_heads,
        step=step,
        texts=_describe(texts),
        n_texts=len(corpus),
        heldout=_describe(held_source),
        n_heldout=len(held),
        loss=setup.loss.name,
        metrics=quality.metrics,
        baseline=baseline,
        curves=tuple(curves),
        pruning=pruning,
        notes=tuple(notes),
        interrupted=bool(notes),
    )
    if cut is not None and out is not None:
        save_pruned(cut, out, {"source_model": loaded.name, **report.to_dict()})
    return report


class _Setup:
    """What every order is computed from."""

    def __init__(
        self,
        loaded: LoadedModel,
        corpus: list[str],
        keys: Sequence[LayerKey],
        per_layer: dict[LayerKey, int],
        batch_size: int,
    ) -> None:
        self.loaded, self.corpus, self.keys, self.per_layer, self.batch_size = (
            loaded,
            corpus,
            keys,
            per_layer,
            batch_size,
        )
        self.loss: Loss | None = None

    def order(self, name: str, seed: int, counts: Sequence[int], bar: _Bar) -> Order:
        if name == "importance":
            return importance_order(
                self.loaded,
                self.corpus,
                counts,
                self.keys,
                self.per_layer,
                self.loss,
                self.batch_size,
                on_done=lambda: bar.step("importance"),
            )
        if name == "entropy":
            return entropy_order(self.loaded, self.corpus, self.keys, self.per_layer, self.batch_size)
        return random_order(self.per_layer, seed)


def _default_loss(loaded: LoadedModel, corpus: list[str]) -> Loss:
    """Next-token loss for decoders, masked-LM loss for encoders with an MLM head, else self-retrieval."""
    try:
        return default_loss(loaded.model)
    except HeadmapError:
        return retrieval_loss(loaded, corpus)


def _reuse(curves: list[Curve], name: str, seed: int, counts: Sequence[int]) -> Order | None:
    """A measured order the cut can follow: the same order (and seed); for importance, one whose
    steps start with the cut's own steps (importance depends on where it is recomputed)."""
    for curve in curves:
        if curve.order.name != name or (name == "random" and curve.order.seed != seed):
            continue
        if name != "importance" or list(curve.counts[: len(counts)]) == list(counts):
            return curve.order
    return None


def _cut(
    loaded: LoadedModel,
    held: list[str],
    quality: Quality,
    order: Order,
    count: int,
    amount: float,
    latency_repeats: int,
) -> tuple[Pruning, LoadedModel]:
    removed = order.heads[:count]
    heads: dict[LayerKey, list[int]] = {}
    for key, head in removed:
        heads.setdefault(key, []).append(head)
    heads = {k: sorted(v) for k, v in heads.items()}
    cut = prune_heads(loaded, heads)
    difference, scale = max_difference(loaded, cut, heads, held)
    before, after = current_layouts(loaded.model), current_layouts(cut.model)
    latency = measure_latency(loaded, cut, held, latency_repeats) if latency_repeats > 0 else None
    pruning = Pruning(
        order=order.label,
        amount=amount,
        removed=tuple((k.name, h) for k, h in removed),
        layouts=tuple(after),
        quality=quality.measure(cut),
        parameters_before=parameter_count(loaded.model),
        parameters_after=parameter_count(cut.model),
        kv_heads_before=sum(len(x.kv) for x in before),
        kv_heads_after=sum(len(x.kv) for x in after),
        max_difference=difference,
        output_scale=scale,
        latency=latency,
        folder=None,
    )
    return pruning, cut


def _describe(source: object) -> str:
    if isinstance(source, (str, Path)):
        return Path(source).name
    return "the given texts"


__all__ = ["HELDOUT", "ORDERS", "SEEDS", "default_heldout", "prune"]
