"""The report of an explained generation (:class:`GenerationReport`): per generated token, attention
to the prompt's words beside their causal effect, as a table, two heatmaps and a page."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from headmap.attribution.attention import DEFAULT_LAYERS
from headmap.attribution.generation import GenerationSettings, GenerationTrace, trace_generation
from headmap.models import LoadedModel
from headmap.render.report import Report, format_number, json_numbers
from headmap.result import CAUSATION_WARNING

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _shown(piece: str) -> str:
    """A token or word as a label: trimmed, or its whitespace made visible (a newline is not blank)."""
    return piece.strip() or piece.translate(_VISIBLE) or "∅"


_VISIBLE = str.maketrans({"\n": "⏎", " ": "␣", "\t": "⇥", "\r": "␍"})


@dataclass(frozen=True)
class GenerationReport(Report):
    """An explained generation (:func:`explain_generation`)."""

    trace: GenerationTrace

    tabular = True  # to_pandas() is the long table: .parquet too

    @property
    def text(self) -> str:
        """The generated text."""
        return "".join(self.trace.generated)

    def to_pandas(self) -> pd.DataFrame:
        """One row per (generated token, prompt word): attention, occlusion drop, the token's log p."""
        t = self.trace
        rows = []
        for i, token in enumerate(t.generated):
            for w, word in enumerate(t.words):
                rows.append(
                    {
                        "step": i,
                        "token": token,
                        "logprob": float(t.logprobs[i]),
                        "word_index": w,
                        "word": word,
                        "attention": float(t.attention[i, w]),
                        "occlusion": float("nan") if t.occlusion is None else float(t.occlusion[i, w]),
                    }
                )
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        t = self.trace
        s = t.settings
        return {
            "kind": "generation",
            "model": t.model,
            "prompt": t.prompt.text,
            "words": list(t.words),
            "generated": list(t.generated),
            "generated_ids": list(t.generated_ids),
            "logprobs": json_numbers(t.logprobs),
            "attention": [json_numbers(row) for row in t.attention],
            "occlusion": None if t.occlusion is None else [json_numbers(row) for row in t.occlusion],
            "agreement": json_numbers(t.agreement),
            "layers": list(t.layers),
            "heads": list(t.heads),
            "settings": {
                "max_new_tokens": s.max_new_tokens,
                "temperature": s.temperature,
                "seed": s.seed,
                "chat": s.chat,
                "decoding": "greedy" if s.temperature is None else "sampled",
            },
            "warning": CAUSATION_WARNING,
        }

    def figure(self, **options: Any) -> Figure:
        """Attention (left) and the occlusion drop (right), generated tokens down, prompt words across."""
        import matplotlib.pyplot as plt  # the figure's own dependency, loaded when drawn

        t = self.trace
        panels = [("attention (" + ", ".join(t.layers) + ")", t.attention, "viridis")]
        if t.occlusion is not None:
            panels.append(("occlusion: drop of log p", t.occlusion, "RdBu_r"))
        width = max(6.0, 0.45 * len(t.words)) * len(panels)
        fig, axes = plt.subplots(1, len(panels), figsize=(width, max(3.0, 0.35 * len(t.generated) + 1.5)))
        axes = np.atleast_1d(axes)
        for ax, (title, values, cmap) in zip(axes, panels, strict=True):
            if cmap == "RdBu_r":
                bound = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
                image = ax.imshow(values, cmap=cmap, vmin=-bound, vmax=bound, aspect="auto")
            else:
                image = ax.imshow(values, cmap=cmap, vmin=0.0, aspect="auto")
            ax.set_xticks(
                range(len(t.words)), [_shown(w) for w in t.words], rotation=60, ha="right", fontsize=8
            )
            ax.set_yticks(range(len(t.generated)), [_shown(g) for g in t.generated], fontsize=8)
            ax.set_title(title, fontsize=9)
            fig.colorbar(image, ax=ax, fraction=0.04)
        fig.suptitle(f"{t.model}: where each generated token looked (correlation, not causation)", fontsize=9)
        fig.tight_layout()
        return fig

    def token_table(self, top: int = 3) -> pd.DataFrame:
        """One row per generated token: its log p, the ``top`` words it attends to most, the ``top``
        words whose removal lowers it most (occlusion), and the rank agreement of the two."""
        t = self.trace
        agreement = t.agreement
        rows = []
        for i, token in enumerate(t.generated):
            needed = ""
            if t.occlusion is not None:
                order = np.argsort(-np.nan_to_num(t.occlusion[i], nan=-np.inf), kind="stable")[:top]
                needed = ", ".join(_shown(t.words[w]) for w in order)
            rows.append(
                {
                    "step": i,
                    "token": _shown(token),
                    "logprob": float(t.logprobs[i]),
                    "attended": ", ".join(
                        _shown(t.words[w]) for w in np.argsort(-t.attention[i], kind="stable")[:top]
                    ),
                    "needed": needed,
                    "spearman": float(agreement[i]),
                }
            )
        return pd.DataFrame(rows)

    def page(self, **options: Any) -> str:
        """The token table as HTML (every token escaped), with the prompt, the answer and the warning."""
        t = self.trace
        lines = [
            f"<h3>{html.escape(t.model)}: explained generation</h3>",
            f"<p><b>Prompt</b>: {html.escape(t.prompt.text)}<br><b>Generated</b>: {html.escape(self.text)}</p>",
            f"<p><i>{html.escape(CAUSATION_WARNING)} The occlusion column is the causal check. "
            f"Attention: {html.escape(', '.join(t.layers))}.</i></p>",
            "<table><tr><th>#</th><th>token</th><th>log p</th><th>most attended words</th>"
            "<th>most needed words (occlusion)</th><th>Spearman</th></tr>",
        ]
        for row in self.token_table().itertuples():
            lines.append(
                f"<tr><td>{row.step}</td><td>{html.escape(row.token)}</td><td>{format_number(row.logprob)}</td>"
                f"<td>{html.escape(row.attended)}</td><td>{html.escape(row.needed)}</td>"
                f"<td>{format_number(row.spearman)}</td></tr>"
            )
        lines.append("</table>")
        return "\n".join(lines)

    def summary(self) -> str:
        """A few lines: what was generated and how attention agreed with the causal check."""
        t = self.trace
        mean = np.nanmean(t.agreement) if np.isfinite(t.agreement).any() else float("nan")
        return (
            f"{t.model} generated {len(t.generated)} tokens: {self.text!r}\n"
            f"attention ({', '.join(t.layers)}) vs occlusion, mean Spearman over tokens: {format_number(mean)}\n"
            f"{CAUSATION_WARNING}"
        )

    def __repr__(self) -> str:
        return f"GenerationReport({self.trace.model!r}, {len(self.trace.generated)} tokens: {self.text!r})"


def explain_generation(
    model: LoadedModel | str,
    prompt: str,
    *,
    max_new_tokens: int = 20,
    temperature: float | None = None,
    seed: int = 0,
    chat: bool = False,
    layers: Sequence[int | str] = DEFAULT_LAYERS,
    heads: Sequence[int] | None = None,
    occlusion: bool = True,
    batch_size: int = 8,
) -> GenerationReport:
    """Generate from ``prompt`` (greedy, or sampled at ``temperature`` with ``seed``; ``chat``: as a
    user turn of the model's chat template) and show, for every generated token, where it looked in
    the prompt (the mean over ``layers`` and ``heads``; default every head of the last layer) beside
    each prompt word's causal effect on it (``occlusion``: one forward per word). See
    :mod:`headmap.attribution.generation`."""
    settings = GenerationSettings(
        max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, chat=chat
    )
    trace = trace_generation(
        model,
        prompt,
        settings=settings,
        layers=layers,
        heads=heads,
        occlusion=occlusion,
        batch_size=batch_size,
    )
    return GenerationReport(trace)
