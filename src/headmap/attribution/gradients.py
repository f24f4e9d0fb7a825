"""Gradient attributions through captum, on the output of the input embedding layer.

- **ig**: Integrated Gradients (Sundararajan et al. 2017), captum's ``IntegratedGradients`` on the
  input embeddings (the model runs on ``inputs_embeds``) with Gauss-Legendre steps and
  ``internal_batch_size`` so memory stays bounded. The path starts at a baseline
  (:mod:`headmap.attribution.baselines`: ``mask``, ``pad``, ``uniform``, ``data``, ``zero`` or a
  token id, each optionally ``+first``, which keeps the decoder's token 0 fixed); special tokens
  and the explained ``[MASK]`` stay at their embeddings. Completeness says the scores sum to
  F(x) - F(baseline); captum's convergence delta is the gap. When
  ``|delta| > 5% |F(x) - F(baseline)|`` the steps are doubled, up to ``max_steps``; the steps used,
  every try's delta and whether the rule was met are reported.
- **input_x_gradient**: embedding x gradient of F at the input (captum ``LayerGradientXActivation``).

A token's score is the sum over the embedding dimensions. ``input_x_gradient`` attributes to a
layer by hooking it; it hooks a per-call stand-in that looks the ids up in the model's embedding
layer, and the model then runs on those embeddings (``inputs_embeds``). Hooking the model's own
module would change the forwards of every other thread using the model at that moment. IG needs
no hook: it differentiates with respect to the embeddings themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from headmap.attribution.base import Attribution, Problem
from headmap.attribution.baselines import Baseline, resolve
from headmap.attribution.target import ModelInputs
from headmap.errors import HeadmapError

#: The convergence rule: |delta| may be at most this share of |F(x) - F(baseline)|.
TOLERANCE = 0.05
#: Below this gap (float32 noise of a log-probability) the rule compares to this floor instead.
ABSOLUTE_FLOOR = 1e-5


class EmbeddingLookup(torch.nn.Module):
    """A per-call stand-in for the model's input embedding layer: ``ids -> embeddings``.

    captum hooks this module, never the shared one, so the hooks live and die with one call.
    """

    def __init__(self, embedding: torch.nn.Module) -> None:
        super().__init__()
        self.embedding = embedding

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids)


def _lookup(problem: Problem) -> EmbeddingLookup:
    layer = problem.loaded.model.get_input_embeddings()
    if layer is None:
        raise HeadmapError(
            f"{problem.loaded.name} exposes no input embedding layer: gradient methods need one"
        )
    return EmbeddingLookup(layer)


def _forward(problem: Problem, lookup: EmbeddingLookup):
    """F of ids, through ``lookup`` (where captum swaps in the interpolated embeddings)."""
    model, target = problem.loaded.model, problem.target

    def forward(ids: torch.Tensor, mask: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        return target.score(model, ModelInputs(ids, mask, position, embeds=lookup(ids)))

    return forward


def embeds_forward(problem: Problem):
    """F of input embeddings ``[batch, token, hidden]`` (the ids ride along for targets that read them)."""
    model, target = problem.loaded.model, problem.target

    def forward(
        embeds: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, position: torch.Tensor
    ) -> torch.Tensor:
        return target.score(model, ModelInputs(ids, mask, position, embeds=embeds))

    return forward


def converged(delta: float, gap: float, tolerance: float = TOLERANCE) -> bool:
    """The convergence rule: ``|delta| <= tolerance x |F(x) - F(baseline)|`` (with a float32 floor)."""
    return abs(delta) <= tolerance * max(abs(gap), ABSOLUTE_FLOOR)


def baseline_for(problem: Problem, baseline: str | int, corpus: Path | None = None) -> Baseline:
    """The resolved baseline of ``problem`` (its embeddings, kept positions and description)."""
    lookup = _lookup(problem)
    with torch.no_grad():
        embeds = lookup(problem.inputs().ids).detach()
    return resolve(problem, baseline, lookup.embedding, embeds, corpus)


@dataclass(frozen=True)
class IntegratedGradients:
    """IG scores; ``info`` has ``steps``, ``delta``, ``converged``, ``baseline``, ``baseline_output``
    and ``tries`` (``[steps, delta]`` of every step count tried).

    ``baseline``: see :mod:`headmap.attribution.baselines`; ``corpus``: the ``data`` baseline's texts.
    """

    n_steps: int = 50
    max_steps: int = 400
    internal_batch_size: int = 16
    baseline: str | int = "auto"
    tolerance: float = TOLERANCE
    name: str = "ig"
    corpus: Path | None = None

    def attribute(self, problem: Problem) -> Attribution:
        from captum.attr import IntegratedGradients as CaptumIG

        if self.n_steps < 2 or self.max_steps < self.n_steps or self.internal_batch_size < 1:
            raise HeadmapError("IG needs n_steps >= 2, max_steps >= n_steps and internal_batch_size >= 1")
        inputs = problem.inputs()
        lookup = _lookup(problem)
        with torch.no_grad():
            embeds = lookup(inputs.ids).detach()
        base = resolve(problem, self.baseline, lookup.embedding, embeds, self.corpus)
        with torch.inference_mode():
            base_output = float(
                problem.target.score(
                    problem.loaded.model,
                    ModelInputs(inputs.ids, inputs.mask, inputs.position, embeds=base.embeds),
                )[0]
            )
        output = problem.output()
        gap = output - base_output
        steps, tries = self.n_steps, []
        with torch.enable_grad():
            method = CaptumIG(embeds_forward(problem))
            while True:
                attributions, delta_t = method.attribute(
                    embeds,
                    baselines=base.embeds,
                    additional_forward_args=(inputs.ids, inputs.mask, inputs.position),
                    n_steps=steps,
                    internal_batch_size=self.internal_batch_size,
                    return_convergence_delta=True,
                )
                delta = float(delta_t.reshape(-1)[0])
                tries.append([steps, delta])
                ok = converged(delta, gap, self.tolerance)
                if ok or steps * 2 > self.max_steps:
                    break
                steps *= 2
        scores = attributions[0].detach().double().sum(-1).cpu().numpy()
        return Attribution(
            self.name,
            scores,
            signed=True,
            info={
                "steps": steps,
                "delta": delta,
                "converged": ok,
                "relative_delta": abs(delta) / max(abs(gap), ABSOLUTE_FLOOR),
                "tries": tries,
                "tolerance": self.tolerance,
                "baseline": base.description,
                "baseline_name": base.name,
                "baseline_token_id": base.token_id,
                "kept": list(base.kept),
                "baseline_output": base_output,
                "output": output,
                "method": "gausslegendre",
                "internal_batch_size": self.internal_batch_size,
            },
        )


@dataclass(frozen=True)
class InputXGradient:
    """Input x gradient scores: the embedding times the gradient of F, summed over dimensions."""

    name: str = "input_x_gradient"

    def attribute(self, problem: Problem) -> Attribution:
        from captum.attr import LayerGradientXActivation

        inputs = problem.inputs()
        lookup = _lookup(problem)
        with torch.enable_grad():
            method = LayerGradientXActivation(_forward(problem, lookup), lookup)
            attributions = method.attribute(
                inputs.ids, additional_forward_args=(inputs.mask, inputs.position)
            )
        scores = attributions[0].detach().double().sum(-1).cpu().numpy()
        return Attribution(self.name, scores, signed=True)
