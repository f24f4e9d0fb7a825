"""``bias_probe()``: counterfactual name pairs, their outputs and attention, paired statistics, causal check.

Forward passes, for the ``P`` prompts that the pairs use (one per name, however many pairs it is
in): ``P`` for the outputs, ``P`` captures of the answer rows (stopped after the last captured
layer), ``P`` with the top ``k`` name heads ablated and ``P`` per control set. No attention map is
held: blocks are reduced to the name and evidence sums as they arrive.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from headmap.analysis.ablation import MODES
from headmap.apps.bias.causal import (
    ablated_outputs,
    check_ablatable,
    control_cells,
    name_scores,
    named,
    top_cells,
)
from headmap.apps.bias.evidence import span_attention
from headmap.apps.bias.inputs import as_groups, check_template
from headmap.apps.bias.outputs import answer_positions, resolve, score_prompts, target_record
from headmap.apps.bias.pairs import build_prompt, make_pairs
from headmap.apps.bias.report import BiasReport
from headmap.attribution.target import ScoreFunction
from headmap.capture.plan import LayerSpec
from headmap.errors import HeadmapError
from headmap.models import LoadedModel, load


def bias_probe(
    model: LoadedModel | str,
    template: str,
    groups: Mapping[str, Sequence[str] | str | Path],
    evidence: str,
    *,
    target: str | int | ScoreFunction | None = None,
    compare: str | None = None,
    pairs: int | None = None,
    k: int = 5,
    controls: int = 3,
    mode: str = "zero",
    layers: LayerSpec | Sequence[LayerSpec] | None = None,
    heads: int | Sequence[int] | None = None,
    chat: bool = False,
    seed: int = 0,
    resamples: int = 10_000,
    confidence: float = 0.95,
    batch_size: int = 8,
    progress: bool = False,
) -> BiasReport:
    """Probe whether a model's output depends on which group a name comes from, with a causal check.

    ``template``: text with a ``{name}`` slot; ``evidence``: a phrase of the template (exactly
    once) the decision should rest on; ``groups``: two labels mapped to lists of names or ``.txt``
    files (one name per line, ``#`` comments), the first is group A. The compared output is the
    log-probability of ``target`` (a token, e.g. ``" Yes"``) after the prompt for decoders, the
    cosine of the prompt's mean-pooled embedding with ``compare`` (encoders), or a function
    ``fn(output, inputs) -> Tensor[batch]``. ``chat=True`` puts the filled template in the model's
    chat template as the user message.

    ``pairs``: None pairs every A name with every B name; a number draws that many pairs with
    ``seed`` (one-to-one while it is at most the smaller group's size). ``k`` heads, those with the
    largest mean attention on the name, are ablated together (``mode`` "zero" or "mean"), and
    ``controls`` random sets of ``k`` other heads beside them. ``layers``/``heads``: which are
    captured (and may be ablated); all by default. Statistics: see :mod:`headmap.apps.bias.stats`.

    Attention is correlation, not causation: the report sets the heads' attention beside what
    ablating them does to the gap.
    """
    loaded = load(model) if isinstance(model, str) else model
    checked = check_template(template, evidence)
    group_a, group_b = as_groups(groups)
    _check_settings(mode, k, controls, batch_size)
    check_ablatable(loaded, layers)
    name_pairs = make_pairs(len(group_a.names), len(group_b.names), pairs, seed)
    if len(name_pairs) < 2:
        raise HeadmapError(
            "the probe needs at least 2 pairs for its statistics: give more names or a larger --pairs"
        )
    # Only the names the pairs use are run, A's first; pairs then index those prompts.
    used_a, used_b = np.unique(name_pairs[:, 0]), np.unique(name_pairs[:, 1])
    prompts = [build_prompt(loaded, checked, group_a.names[i], 0, chat) for i in used_a] + [
        build_prompt(loaded, checked, group_b.names[i], 1, chat) for i in used_b
    ]
    prompt_pairs = np.stack(
        [np.searchsorted(used_a, name_pairs[:, 0]), len(used_a) + np.searchsorted(used_b, name_pairs[:, 1])],
        axis=1,
    )
    resolved = resolve(loaded, prompts, target, compare)
    positions = answer_positions(resolved, prompts, getattr(loaded.tokenizer, "mask_token_id", None))
    with _Progress(progress, len(prompts) * (3 + controls)) as tick:
        outputs = score_prompts(loaded, resolved, prompts, positions, batch_size, tick)
        spans = span_attention(loaded, prompts, positions, layers, heads, batch_size, tick)
        if k > spans.name[0].size:
            raise HeadmapError(
                f"k = {k} but only {spans.name[0].size} heads were captured: lower k or capture more"
            )
        top = top_cells(name_scores(spans.name, prompt_pairs[:, 0], prompt_pairs[:, 1]), k)
        ablated = named(top, spans.layers, spans.heads)
        ablated_out = ablated_outputs(loaded, resolved, prompts, positions, ablated, mode, batch_size, tick)
        sets = [
            named(c, spans.layers, spans.heads)
            for c in control_cells(spans.name.shape[1:], top, k, controls, seed)
        ]
        control_out = [
            ablated_outputs(loaded, resolved, prompts, positions, s, mode, batch_size, tick) for s in sets
        ]
    return BiasReport(
        model=loaded.name,
        template=template,
        evidence=evidence,
        chat=chat,
        groups=(group_a, group_b),
        prompts=tuple(prompts),
        target=target_record(resolved),
        positions=tuple(positions),
        pairs=prompt_pairs,
        pair_count=pairs,
        outputs=outputs,
        name_attention=spans.name,
        evidence_attention=spans.evidence,
        first_attention=spans.first,
        layers=spans.layers,
        heads=spans.heads,
        k=k,
        mode=mode,
        ablated=tuple(ablated),
        ablated_outputs=ablated_out,
        control_heads=tuple(tuple(s) for s in sets),
        control_outputs=np.stack(control_out) if control_out else np.zeros((0, len(prompts))),
        seed=seed,
        resamples=resamples,
        confidence=confidence,
    )


def _check_settings(mode: str, k: int, controls: int, batch_size: int) -> None:
    if mode not in MODES:
        raise HeadmapError(f"unknown ablation mode {mode!r}: use one of {', '.join(MODES)}")
    if k < 1:
        raise HeadmapError(f"k must be at least 1 (the number of name heads to ablate), not {k}")
    if controls < 0:
        raise HeadmapError(
            f"controls must be 0 or more (random head sets to ablate for comparison), not {controls}"
        )
    if batch_size < 1:
        raise HeadmapError(f"the batch size must be at least 1, not {batch_size}")


class _Progress:
    """A tqdm bar over prompt forwards (or nothing); ``with _Progress(on, n) as tick: tick(done)``."""

    def __init__(self, enabled: bool, total: int) -> None:
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc="bias forwards", unit="prompt", leave=False)

    def __enter__(self) -> Callable[[int], None]:
        return self._tick

    def _tick(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(done)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
