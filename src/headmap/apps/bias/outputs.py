"""The compared output of every prompt: the attribution stage's explained outputs, one number per prompt.

- Decoders: the log-probability of the target token as the next token after the prompt
  (:class:`~headmap.attribution.target.TokenLogProb`, log-softmax in float64).
- Encoders without an LM head (MiniLM): the cosine between the prompt's mean-pooled embedding and
  that of a compare text (:class:`~headmap.attribution.target.Cosine`).
- Masked LMs: the log-probability of the target at the prompt's first ``[MASK]``.
- Any model: a user function ``fn(output, inputs) -> Tensor[batch]``.

The **answer position** of a prompt is the row whose output is compared: the last prompt token
for decoders (it predicts the target), the ``[MASK]`` for masked LMs; outputs that pool every
token (the cosine, a user function on an encoder) have none, and their attention is the mean
over all rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from headmap.apps.bias.pairs import BiasPrompt
from headmap.attribution.target import ModelInputs, ScoreFunction, Target, model_kind, resolve_target
from headmap.capture.encoding import pad_batch, pad_token_id
from headmap.errors import HeadmapError
from headmap.models import LoadedModel
from headmap.models.devices import input_device


def resolve(
    loaded: LoadedModel,
    prompts: Sequence[BiasPrompt],
    target: str | int | ScoreFunction | None,
    compare: str | None,
) -> Target:
    """The compared output, checked against what the model can give (a target token is required for LMs:
    the model's own top token would differ from prompt to prompt)."""
    if target is None and compare is None and model_kind(loaded.model) in ("causal", "masked"):
        raise HeadmapError(
            'give the target token the groups are compared on, e.g. target=" Yes" '
            '(--target " Yes"), or compare=TEXT (--compare) for the cosine of the prompt\'s embedding '
            "with a text"
        )
    resolved = resolve_target(loaded, prompts[0].ids, target, compare)
    if resolved.kind == "masked-token":
        answer_positions(resolved, prompts, mask_id=getattr(loaded.tokenizer, "mask_token_id", None))
    return resolved


def answer_positions(
    target: Target, prompts: Sequence[BiasPrompt], mask_id: int | None = None
) -> list[int | None]:
    """Per prompt, the answer position (see the module docstring), or None for outputs that pool every token."""
    if target.position is None:
        return [None] * len(prompts)
    if target.kind != "masked-token":
        return [len(p) - 1 for p in prompts]
    out: list[int | None] = []
    for p in prompts:
        if mask_id not in p.ids:
            raise HeadmapError(
                f"the prompt for {p.name!r} has no mask token: keep the mask in the template, "
                "outside the name"
            )
        out.append(p.ids.index(mask_id))
    return out


def score_prompts(
    loaded: LoadedModel,
    target: Target,
    prompts: Sequence[BiasPrompt],
    positions: Sequence[int | None],
    batch_size: int = 8,
    tick: Callable[[int], None] | None = None,
) -> np.ndarray:
    """``[prompt]`` float64: the compared output of each prompt, in right-padded batches.

    Padding on the right changes no real token's result (causal models never look ahead; the mask
    hides the pads from encoders), so each number is the prompt's own.
    """
    model = loaded.model
    device = input_device(model)
    pad = pad_token_id(loaded.tokenizer)
    out = []
    step = max(1, batch_size)
    for first in range(0, len(prompts), step):
        batch = prompts[first : first + step]
        ids, mask, _ = pad_batch([p.ids for p in batch], pad, "right")
        where = [len(p) - 1 if pos is None else pos for p, pos in zip(batch, positions[first : first + step])]
        inputs = ModelInputs(ids.to(device), mask.to(device), torch.tensor(where, device=device))
        out.append(target.evaluate(model, inputs).cpu().numpy().astype(np.float64))
        if tick is not None:
            tick(len(batch))
    return np.concatenate(out)


def target_record(target: Target) -> dict[str, object]:
    """The target as saved in the report: its fields, described for every prompt (the position varies)."""
    record = {k: v for k, v in target.to_dict().items() if k != "position"}
    if target.kind == "next-token":
        record["description"] = f"log p({record['token']!r}) as the next token after the prompt"
    elif target.kind == "masked-token":
        record["description"] = f"log p({record['token']!r}) at the prompt's mask token"
    return record
