"""Gradient attributions through captum, on the output of the input embedding layer.

- **ig**: Integrated Gradients (Sundararajan et al. 2017), captum's ``LayerIntegratedGradients``
  on ``model.get_input_embeddings()`` with Gauss-Legendre steps and ``internal_batch_size`` so
  memory stays bounded. The baseline replaces every ordinary token by one stated token (default:
  ``[MASK]`` where the tokenizer has one, else its pad token) and keeps special tokens and the
  explained ``[MASK]``. Completeness says the scores sum to F(x) - F(baseline); captum's
  convergence delta is the gap. When ``|delta| > 5% |F(x) - F(baseline)|`` the steps are doubled,
  up to ``max_steps``; the steps used and whether the rule was met are reported.
- **input_x_gradient**: embedding x gradient of F at the input (captum ``LayerGradientXActivation``).

A token's score is the sum over the embedding dimensions. captum attributes to a layer by
hooking it; it hooks a per-call stand-in that looks the ids up in the model's embedding layer,
and the model then runs on those embeddings (``inputs_embeds``). Hooking the model's own module
would change the forwards of every other thread using the model at that moment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from headmap.attribution.base import Attribution, Problem
from headmap.attribution.target import ModelInputs
from headmap.capture.encoding import pad_token_id
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


def baseline_token(problem: Problem, baseline: str | int) -> tuple[int, str]:
    """The baseline token id and its name: ``"auto"``, ``"mask"``, ``"pad"`` or a token id."""
    tokenizer = problem.loaded.tokenizer
    mask = getattr(tokenizer, "mask_token_id", None)
    if baseline == "auto":
        baseline = "mask" if isinstance(mask, int) else "pad"
    if baseline == "mask":
        if not isinstance(mask, int):
            raise HeadmapError(f"{problem.loaded.name}'s tokenizer has no mask token: use the pad baseline")
        token = mask
    elif baseline == "pad":
        token = pad_token_id(tokenizer)
    elif isinstance(baseline, (int, np.integer)) and not isinstance(baseline, bool):
        token = int(baseline)
        if not 0 <= token < len(tokenizer):  # type: ignore[arg-type]  # LoadedModel.tokenizer is typed as object (any fast tokenizer)
            raise HeadmapError(f"baseline token id {token} is out of range for this vocabulary")
    else:
        raise HeadmapError(f"unknown IG baseline {baseline!r}: use 'auto', 'mask', 'pad' or a token id")
    return token, str(tokenizer.convert_ids_to_tokens([token])[0])  # type: ignore[attr-defined]  # LoadedModel.tokenizer is typed as object (any fast tokenizer)


def baseline_ids(problem: Problem, token: int) -> list[int]:
    """The text's ids with every ordinary token replaced by ``token``; special tokens and the
    explained [MASK] of a masked-token target stay (they are the frame, not the evidence)."""
    keep = set(i for i, s in enumerate(problem.tokens.special) if s)
    if problem.target.kind == "masked-token":
        keep.add(problem.position)
    return [t if i in keep else token for i, t in enumerate(problem.ids)]


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


def converged(delta: float, gap: float, tolerance: float = TOLERANCE) -> bool:
    """The convergence rule: ``|delta| <= tolerance x |F(x) - F(baseline)|`` (with a float32 floor)."""
    return abs(delta) <= tolerance * max(abs(gap), ABSOLUTE_FLOOR)


@dataclass(frozen=True)
class IntegratedGradients:
    """IG scores; ``info`` has ``steps``, ``delta``, ``converged``, ``baseline`` and ``baseline_output``."""

    n_steps: int = 50
    max_steps: int = 400
    internal_batch_size: int = 16
    baseline: str | int = "auto"
    tolerance: float = TOLERANCE
    name: str = "ig"

    def attribute(self, problem: Problem) -> Attribution:
        from captum.attr import LayerIntegratedGradients

        if self.n_steps < 2 or self.max_steps < self.n_steps or self.internal_batch_size < 1:
            raise HeadmapError("IG needs n_steps >= 2, max_steps >= n_steps and internal_batch_size >= 1")
        token, token_name = baseline_token(problem, self.baseline)
        inputs = problem.inputs()
        base = torch.tensor([baseline_ids(problem, token)], dtype=torch.long, device=inputs.ids.device)
        with torch.inference_mode():
            base_output = float(
                problem.target.score(problem.loaded.model, ModelInputs(base, inputs.mask, inputs.position))[0]
            )
        output = problem.output()
        gap = output - base_output
        steps = self.n_steps
        lookup = _lookup(problem)
        with torch.enable_grad():
            method = LayerIntegratedGradients(_forward(problem, lookup), lookup)
            while True:
                attributions, delta_t = method.attribute(
                    inputs.ids,
                    baselines=base,
                    additional_forward_args=(inputs.mask, inputs.position),
                    n_steps=steps,
                    internal_batch_size=self.internal_batch_size,
                    return_convergence_delta=True,
                )
                delta = float(delta_t.reshape(-1)[0])
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
                "tolerance": self.tolerance,
                "baseline": f"every ordinary token replaced by {token_name!r} (id {token}); special tokens kept",
                "baseline_token_id": token,
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
