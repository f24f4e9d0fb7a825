"""Head importance (Michel et al. 2019): how much a loss changes when a head's output is scaled.

Each head of each text gets a gate ``g`` (1: the model as it is) multiplied into its slice of the
attention kernel output, as in :mod:`headmap.analysis.ablation`. A head's importance on a text is
``|d loss / d g|`` at ``g = 1`` and a corpus's is its mean over texts, reported raw and divided by
the l2 norm over the heads of each layer. Gates are per text (``[text, layer, head]``), so one
backward pass of a batch gives every text's own gradient.

The model runs in eval mode (no dropout) and gets back the mode of each of its modules; gradients
are taken with :func:`torch.autograd.grad` for the gates only, so no parameter's ``.grad`` changes.
"""

from __future__ import annotations

import html
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import torch

from headmap.analysis.corpus import CorpusText, as_corpus, encode_text
from headmap.analysis.gating import eval_mode, gate_heads
from headmap.analysis.losses import Loss, LossFn, resolve_loss
from headmap.analysis.partials import Partial
from headmap.analysis.report_html import figure_img
from headmap.analysis.report_plots import plot_layer_head
from headmap.capture.discovery import discover
from headmap.capture.encoding import pad_batch, pad_token_id
from headmap.capture.engine import max_tokens
from headmap.capture.plan import LayerSpec, resolve_heads, resolve_layers
from headmap.errors import HeadmapError
from headmap.models import LoadedModel, load
from headmap.models.devices import input_device
from headmap.render.report import Report, check_writable, format_number, json_numbers, write
from headmap.result import CAUSATION_WARNING, LayerKey

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def importance_partial(
    loaded: LoadedModel,
    texts: Sequence[CorpusText],
    keys: Sequence[LayerKey],
    heads: Sequence[int],
    loss: Loss,
) -> Partial:
    """``Partial.importance`` ``[text, layer, head]``: ``|d loss_text / d gate|`` for every text of ``texts``."""
    model = loaded.model
    arch = discover(model)
    limit = max_tokens(loaded, arch)
    encoded = []
    for text in texts:
        ids, tokens = encode_text(loaded.tokenizer, text, limit)
        if len(ids) < loss.min_tokens:
            raise HeadmapError(
                f"{text.origin}: {len(ids)} token(s); the {loss.name} needs at least {loss.min_tokens}"
            )
        encoded.append((ids, tokens))
    batch_ids, mask, _ = pad_batch([e[0] for e in encoded], pad_token_id(loaded.tokenizer), "right")
    param = next(model.parameters())
    device = input_device(model)
    inputs = loss.prepare(
        {"input_ids": batch_ids, "attention_mask": mask},
        [e[1] for e in encoded],
        getattr(loaded.tokenizer, "mask_token_id", None),
    )
    inputs = {k: v.to(device) for k, v in inputs.items()}
    dtype = param.dtype if param.dtype.is_floating_point else torch.float32
    gates = torch.ones(len(texts), len(keys), arch.num_heads, dtype=dtype, device=device, requires_grad=True)
    slot = {key: i for i, key in enumerate(keys)}

    def advice(key, out, call, forward):
        return out * gates[:, slot[key], None, :, None].to(out.device, out.dtype)  # [batch, 1, head, 1]

    model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
    with (
        eval_mode(model),
        gate_heads(loaded, list(keys), advice, what="head importance"),
        torch.enable_grad(),
    ):
        output = model(**model_inputs, use_cache=False) if _takes_cache(model) else model(**model_inputs)
        losses = loss.compute(output, inputs)
        if not isinstance(losses, torch.Tensor) or losses.reshape(-1).shape[0] != len(texts):
            got = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
            raise HeadmapError(
                f"the loss returned {got}; it must return one value per text ({len(texts)} here)"
            )
        if not losses.requires_grad:
            raise HeadmapError(
                "the loss does not depend on the model's output (no gradient): check the loss function"
            )
        (grad,) = torch.autograd.grad(losses.sum(), gates)
    picked = grad.detach().abs().double().cpu().numpy()[:, :, list(heads)]
    return Partial(
        indices=np.array([t.index for t in texts], dtype=np.int64),
        digests=tuple(t.digest for t in texts),
        n_tokens=np.array([len(e[0]) for e in encoded], dtype=np.int64),
        importance=picked,
    )


def _takes_cache(model: torch.nn.Module) -> bool:
    return "use_cache" in inspect.signature(model.forward).parameters


@dataclass(frozen=True)
class HeadImportance(Report):
    """Importance of every (layer, head): ``raw`` and ``normalized`` are ``[layer, head]``.

    The report contract (:class:`~headmap.render.report.Report`): ``save`` writes ``.json``,
    ``.html``, pictures and ``.parquet`` (one row per head), and ``.csv`` as before.
    """

    model: str
    layers: tuple[LayerKey, ...]
    heads: tuple[int, ...]
    raw: np.ndarray
    normalized: np.ndarray
    loss: str
    n_texts: int

    tabular: ClassVar[bool] = True

    def to_pandas(self) -> pd.DataFrame:
        """One row per (layer, head): ``layer``, ``head``, ``importance``, ``importance_norm``."""
        return pd.DataFrame(
            [
                {
                    "layer": k.name,
                    "head": h,
                    "importance": float(self.raw[li, hi]),
                    "importance_norm": float(self.normalized[li, hi]),
                }
                for li, k in enumerate(self.layers)
                for hi, h in enumerate(self.heads)
            ],
            columns=["layer", "head", "importance", "importance_norm"],
        )

    @property
    def table(self) -> pd.DataFrame:
        """The same as :meth:`to_pandas`."""
        return self.to_pandas()

    def to_dict(self) -> dict[str, Any]:
        """Model, loss, layers, heads and both ``[layer, head]`` arrays (None where undefined)."""
        return {
            "model": self.model,
            "loss": self.loss,
            "n_texts": self.n_texts,
            "layers": [k.name for k in self.layers],
            "heads": list(self.heads),
            "importance": [json_numbers(row) for row in self.raw],
            "importance_norm": [json_numbers(row) for row in self.normalized],
            "warning": CAUSATION_WARNING,
        }

    def figure(self, normalized: bool = True, **options: Any) -> Figure:
        """Layer x head heatmap of the importance (``normalized``: l2-normalized per layer)."""
        values = self.normalized if normalized else self.raw
        what = "importance, l2-normalized per layer" if normalized else "importance |d loss / d gate|"
        return plot_layer_head(
            values,
            [k.name for k in self.layers],
            list(self.heads),
            self.model,
            f"{what} · {self.loss}, mean over {self.n_texts} texts",
            cmap=options.get("cmap", "magma"),
        )

    def plot(self, normalized: bool = True) -> Figure:
        """The same as :meth:`figure`."""
        return self.figure(normalized)

    def page(self, **options: Any) -> str:
        """The picture and the table as one HTML fragment."""
        table = self.to_pandas().to_html(index=False, float_format=format_number, na_rep="n/a")
        return (
            f"<div><p>{html.escape(self.model)}: head importance ({html.escape(self.loss)}, "
            f"{self.n_texts} texts)</p>{figure_img(self.figure(**options), 'head importance')}{table}"
            f"<p><em>{html.escape(CAUSATION_WARNING)}</em></p></div>"
        )

    def save(self, path: str | Path, **options: Any) -> Path:
        """Write by extension (see :meth:`formats`); ``.csv`` writes the table as before."""
        path = Path(path)
        if path.suffix.lower() == ".csv":
            check_writable(path)
            self.to_pandas().to_csv(path, index=False)
            return path
        return write(self, path, **options)

    def __repr__(self) -> str:
        return (
            f"HeadImportance(model={self.model!r}, layers={len(self.layers)}, heads={len(self.heads)}, "
            f"loss={self.loss!r}, texts={self.n_texts})"
        )


def head_importance(
    model: LoadedModel | str,
    texts: Sequence[str] | str | Path,
    *,
    loss: str | LossFn | Loss | None = None,
    layers: LayerSpec | Sequence[LayerSpec] | None = None,
    heads: int | Sequence[int] | None = None,
    batch_size: int = 8,
    max_texts: int | None = None,
    progress: bool = False,
) -> HeadImportance:
    """Importance of every head over ``texts`` (a list, or a corpus path), Michel et al. 2019.

    ``loss``: None (next-token cross-entropy for decoders, masked-LM loss for models with an MLM
    head), ``"causal"``, ``"mlm"``, or ``fn(output, inputs) -> Tensor [batch]`` of the model's output.
    """
    loaded = load(model) if isinstance(model, str) else model
    corpus = as_corpus(texts, max_texts)
    arch = discover(loaded.model)
    if arch.layer_heads:
        raise HeadmapError(
            f"{loaded.name} has layers with different head counts (a pruned model): head importance "
            "gates every layer's heads alike, so compute it on the model before pruning"
        )
    keys, picked = resolve_layers(arch, layers), resolve_heads(arch, heads)
    chosen = resolve_loss(loaded.model, loss)
    parts = []
    bar = _bar(progress, len(corpus))
    for first in range(0, len(corpus), max(1, batch_size)):
        group = corpus[first : first + max(1, batch_size)]
        parts.append(importance_partial(loaded, group, keys, picked, chosen))
        if bar is not None:
            bar.update(len(group))
    if bar is not None:
        bar.close()
    raw = np.concatenate([p.importance for p in parts]).mean(0)
    norm = np.linalg.norm(raw, axis=1, keepdims=True)
    normalized = np.divide(raw, norm, out=np.zeros_like(raw), where=norm > 0)
    return HeadImportance(loaded.name, keys, picked, raw, normalized, chosen.name, len(corpus))


def _bar(enabled: bool, total: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="texts", unit="text")


__all__ = ["HeadImportance", "head_importance", "importance_partial"]
