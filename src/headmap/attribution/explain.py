"""``explain()``: attention beside causal evidence, on one axis, with their agreement measured."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from headmap.attribution.attention import DEFAULT_LAYERS, Attention
from headmap.attribution.attgrad import AttentionXGradient
from headmap.attribution.base import Attribution, Method, Problem, sum_words
from headmap.attribution.calibrated import Calibrated, Calibration, as_calibration
from headmap.attribution.explanation import Explanation
from headmap.attribution.flow import FLOW_MAX_TOKENS, Flow
from headmap.attribution.gradients import InputXGradient, IntegratedGradients
from headmap.attribution.occlusion import Occlusion
from headmap.attribution.rollout import Rollout
from headmap.attribution.target import ScoreFunction, encode_text, resolve_target
from headmap.errors import HeadmapError
from headmap.models import LoadedModel, load
from headmap.view.words import word_groups, word_tokens

#: Every method by name, in display order (occlusion, the causal reference, last).
METHODS = (
    "attention",
    "calibrated",
    "rollout",
    "flow",
    "ig",
    "attention_x_gradient",
    "input_x_gradient",
    "occlusion",
)


def method_names(methods: str | Sequence[str] | None, calibrated: bool = False) -> list[str]:
    """Validated method names (``"ig,occlusion"`` or a list; hyphens allowed); None: all of them
    (``calibrated`` only when ``calibrated``: a calibration is given)."""
    if methods is None:
        return [m for m in METHODS if calibrated or m != "calibrated"]
    wanted = methods.split(",") if isinstance(methods, str) else list(methods)
    names = [str(m).strip().lower().replace("-", "_") for m in wanted if str(m).strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise HeadmapError(
            f"unknown method(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(METHODS)}"
        )
    return list(dict.fromkeys(names))


def build_methods(
    names: Sequence[str],
    *,
    layers: Sequence[int | str],
    heads: Sequence[int] | None,
    n_steps: int,
    max_steps: int,
    internal_batch_size: int,
    baseline: str | int,
    batch_size: int,
    calibration: Calibration | str | Path | None = None,
    loaded: LoadedModel | None = None,
) -> list[Method]:
    if "calibrated" in names and (calibration is None or loaded is None):
        raise HeadmapError(
            "method calibrated needs a calibration: pass calibration=FILE (--calibration FILE), "
            "learned by `headmap calibrate`"
        )
    heads_t = None if heads is None else tuple(int(h) for h in heads)
    layers_t = tuple(layers)
    table: dict[str, Method] = {
        "attention": Attention(layers=layers_t, heads=heads_t),
        "rollout": Rollout(heads=heads_t),
        "flow": Flow(heads=heads_t),
        "ig": IntegratedGradients(
            n_steps=n_steps, max_steps=max_steps, internal_batch_size=internal_batch_size, baseline=baseline
        ),
        "attention_x_gradient": AttentionXGradient(layers=layers_t, heads=heads_t),
        "input_x_gradient": InputXGradient(),
        "occlusion": Occlusion(batch_size=batch_size),
    }
    if calibration is not None and loaded is not None and "calibrated" in names:
        table["calibrated"] = Calibrated(as_calibration(calibration, loaded))
    return [table[name] for name in names]


def explain(
    model: LoadedModel | str,
    text: str,
    target: str | int | ScoreFunction | None = None,
    *,
    compare: str | None = None,
    position: int | None = None,
    methods: str | Sequence[str] | Sequence[Method] | None = None,
    layers: Sequence[int | str] = DEFAULT_LAYERS,
    heads: Sequence[int] | None = None,
    n_steps: int = 50,
    max_steps: int = 400,
    internal_batch_size: int = 16,
    baseline: str | int = "auto",
    batch_size: int = 16,
    calibration: Calibration | str | Path | None = None,
    progress: bool = False,
) -> Explanation:
    """Explain one output of ``model`` on ``text`` with several methods on one token axis.

    The explained output F: decoders, the log-probability of ``target`` (a token string such as
    ``" big"`` or an id; default the model's top token) as the next token after ``position``
    (default: the last token); masked LMs, the same at a ``[MASK]``; any model, with ``compare``,
    the cosine similarity of the mean-pooled embeddings of ``text`` and ``compare``; or
    ``target=fn`` with ``fn(output, inputs) -> Tensor[batch]``, any scalar of the model output.

    ``methods``: names from :data:`METHODS` (or objects with ``name`` and ``attribute(problem)``);
    default all, flow only when the text has at most :data:`~headmap.attribution.flow.FLOW_MAX_TOKENS`
    tokens. ``layers``/``heads``: what attention and attention x gradient read (default: the mean
    over every head of the last layer; rollout and flow use every layer and these heads).
    ``n_steps``, ``max_steps``, ``internal_batch_size``, ``baseline``: Integrated Gradients (the
    baselines: :mod:`headmap.attribution.baselines`; ``"auto"``: ``mask`` for masked-LM tokenizers,
    else ``uniform+first``).
    ``batch_size``: occlusion's forwards per batch. ``calibration``: a
    :class:`~headmap.attribution.calibrated.Calibration` or its file (``headmap calibrate``), which
    the ``calibrated`` method needs (it runs by default when one is given).
    """
    problem = problem_for(model, text, target, compare=compare, position=position)
    notes: list[str] = []
    if methods is None and problem.n > FLOW_MAX_TOKENS:
        names = [m for m in method_names(None, calibration is not None) if m != "flow"]
        notes.append(
            f"flow skipped: {problem.n} tokens is above its limit of {FLOW_MAX_TOKENS} (rollout shown)"
        )
    else:
        names = methods  # type: ignore[assignment]  # a list of method names or None, narrowed by the caller's check
    if names is not None and not isinstance(names, str) and names and not isinstance(names[0], str):
        chosen: list[Method] = list(names)
    else:
        chosen = build_methods(
            method_names(names, calibration is not None),
            layers=layers,
            heads=heads,
            n_steps=n_steps,
            max_steps=max_steps,
            internal_batch_size=internal_batch_size,
            baseline=baseline,
            batch_size=batch_size,
            calibration=calibration,
            loaded=problem.loaded,
        )
    results = _run(problem, chosen, progress)
    return assemble(problem, results, notes)


def problem_for(
    model: LoadedModel | str,
    text: str,
    target: str | int | ScoreFunction | None = None,
    *,
    compare: str | None = None,
    position: int | None = None,
) -> Problem:
    """The :class:`Problem` that :func:`explain` solves (see there for the arguments)."""
    loaded = load(model) if isinstance(model, str) else model
    ids, tokens = encode_text(loaded, text)
    groups = tuple(tuple(g) for g in word_groups(tokens))
    return Problem(loaded, tuple(ids), tokens, resolve_target(loaded, ids, target, compare, position), groups)


def _run(problem: Problem, methods: list[Method], progress: bool) -> list[Attribution]:
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(methods), desc="methods", unit="method", leave=False)
    results = []
    try:
        for method in methods:
            if bar is not None:
                bar.set_postfix_str(method.name)
            result = method.attribute(problem)
            if np.shape(result.tokens) != (problem.n,):
                raise HeadmapError(
                    f"method {method.name} gave {np.shape(result.tokens)} scores for {problem.n} tokens"
                )
            results.append(result)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    names = [r.method for r in results]
    if len(set(names)) != len(names):
        raise HeadmapError(f"two methods share a name: {names}")
    return results


def assemble(problem: Problem, results: list[Attribution], notes: Sequence[str] = ()) -> Explanation:
    """The :class:`Explanation` of ``problem`` from the methods' results."""
    tokens = {r.method: np.asarray(r.tokens, dtype=np.float64) for r in results}
    words = {
        r.method: (
            np.asarray(r.words, dtype=np.float64)
            if r.words is not None
            else sum_words(r.tokens, problem.groups)
        )
        for r in results
    }
    return Explanation(
        model=problem.loaded.name,
        tokens=problem.tokens,
        words=word_tokens(problem.tokens, [list(g) for g in problem.groups]),
        groups=problem.groups,
        target=problem.target.to_dict(),
        output=problem.output(),
        token_scores=tokens,
        word_scores=words,
        signed={r.method: r.signed for r in results},
        info={r.method: dict(r.info) for r in results},
        visible=problem.target.visible(problem.n),
        notes=tuple(notes),
    )
