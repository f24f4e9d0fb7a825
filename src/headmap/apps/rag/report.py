"""The result of a RAG check: attention evidence and the causal check, per chunk, with their agreement.

Arrays follow the evidence module's conventions (see :mod:`headmap.apps.rag.evidence`): the row of
answer token ``t`` is the position that predicts it. Everything printed or saved is computed from
the arrays held here, so a number in the JSON can be traced back to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from headmap.apps.rag.causal import SUPPORTED_RHO, ranks, spearman, verdict
from headmap.apps.rag.chunks import Chunk
from headmap.apps.rag.evidence import DUMMY_SENTENCE, IGNORED_BELOW, flags
from headmap.apps.rag.figure import report_figure
from headmap.apps.rag.page import report_body
from headmap.apps.rag.surrogate import Surrogate, agreement
from headmap.render.report import Report, deprecated_alias, json_number, json_numbers
from headmap.result import CAUSATION_WARNING

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

FORMAT = "headmap-rag/1"
ROW_CONVENTION = (
    "The attention of answer token t is the row of the position that predicts it (the token just "
    "before it): the first answer token reads from the last prompt token."
)


@dataclass(frozen=True, eq=False)
class RagReport(Report):
    """Attention on each chunk while the model gives its answer, and what removing each chunk does.

    Arrays: ``mass`` ``[layer, head, answer_token, chunk]`` (sum of the predicting row's weights over
    the chunk's tokens), ``answer_mass`` ``[layer, head, answer_token]`` (on the answer tokens before
    the predicted one), ``dummy_mass`` like ``mass`` but slot ``c`` measured with chunk ``c``
    replaced by ``dummy_texts[c]``, ``lookback`` ``[layer, head]``, ``token_logprobs``
    ``[answer_token]`` and ``token_logprobs_without`` ``[chunk, answer_token]``.
    """

    model: str
    question: str
    chunks: tuple[Chunk, ...]
    prompt: str
    prompt_ids: tuple[int, ...]
    chat_template: bool
    answer: str
    answer_ids: tuple[int, ...]
    answer_tokens: tuple[str, ...]
    generated: bool
    max_new_tokens: int | None
    truncated: bool
    layers: tuple[str, ...]
    heads: tuple[int, ...]
    chunk_token_counts: tuple[int, ...]
    chunk_pieces: tuple[tuple[str, ...], ...]
    """Each chunk's text cut at its tokens (joined they give the chunk's text in the prompt)."""
    piece_attention: tuple[np.ndarray, ...]
    """Per chunk ``[token]``: weight on each of its tokens, mean over layers, heads and answer rows."""
    mass: np.ndarray
    answer_mass: np.ndarray
    lookback: np.ndarray
    dummy_texts: tuple[str, ...]
    dummy_mass: np.ndarray
    token_logprobs: np.ndarray
    prompts_without: tuple[str, ...]
    token_logprobs_without: np.ndarray
    surrogate: Surrogate | None = None
    """A ContextCite-style surrogate over the chunks (``rag(..., surrogate=k)``), None when not asked."""
    head_weights: np.ndarray | None = None
    """AT2-style learned weights ``[layer, head]`` (``rag(..., calibration=FILE)``, from ``headmap
    calibrate --rag`` or ``calibrate_rag``), None when not given."""

    tabular = True  # to_pandas() is the table: .parquet is written too

    # -- per chunk ------------------------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.chunks]

    @cached_property
    def attention(self) -> np.ndarray:
        """``[chunk]``: mass averaged over the captured layers, heads and answer tokens."""
        return self.mass.astype(np.float64).mean(axis=(0, 1, 2))

    @cached_property
    def dummy_attention(self) -> np.ndarray:
        """``[chunk]``: what the slot got with the chunk replaced by its dummy."""
        return self.dummy_mass.astype(np.float64).mean(axis=(0, 1, 2))

    @property
    def calibrated_attention(self) -> np.ndarray:
        return self.attention - self.dummy_attention

    @property
    def token_attention(self) -> np.ndarray:
        """``[answer_token, chunk]``: mass averaged over layers and heads (the heatmap)."""
        return self.mass.astype(np.float64).mean(axis=(0, 1))

    @property
    def head_attention(self) -> np.ndarray:
        """``[layer, head, chunk]``: mass averaged over answer tokens."""
        return self.mass.astype(np.float64).mean(axis=2)

    @property
    def flags(self) -> list[str]:
        return flags(self.calibrated_attention, self.dummy_attention)

    @property
    def answer_logprob(self) -> float:
        return float(self.token_logprobs.astype(np.float64).sum())

    @property
    def logprob_without(self) -> np.ndarray:
        """``[chunk]``: the answer's log-probability with that chunk removed."""
        return self.token_logprobs_without.astype(np.float64).sum(axis=1)

    @property
    def logprob_drop(self) -> np.ndarray:
        """``[chunk]``: log p(answer | all) - log p(answer | without the chunk); large = the answer needs it."""
        return self.answer_logprob - self.logprob_without

    # -- agreement -----------------------------------------------------------------------------
    @property
    def spearman(self) -> float:
        """Spearman between the chunks' raw attention and their ablation drop (NaN below 3 chunks)."""
        return spearman(self.attention, self.logprob_drop)

    @property
    def spearman_calibrated(self) -> float:
        return spearman(self.calibrated_attention, self.logprob_drop)

    @property
    def learned_attention(self) -> np.ndarray | None:
        """``[chunk]``: the answer rows' per-head mass weighted by :attr:`head_weights`, summed over the
        answer tokens (AT2's attribution, one forward); None without weights."""
        if self.head_weights is None:
            return None
        return np.einsum("lhtc,lh->c", self.mass.astype(np.float64), self.head_weights)

    @property
    def costs(self) -> pd.DataFrame:
        """Each chunk attribution beside its cost in forwards and its agreement with leave-one-out (the
        reference: one forward per chunk): Spearman over the chunks and whether the top chunk is the same."""
        import pandas as pd

        found = {
            "attention": (1, self.attention),
            "position-calibrated attention": (1 + len(self.chunks), self.calibrated_attention),
        }
        if self.learned_attention is not None:
            found["learned head weights (AT2)"] = (1, self.learned_attention)
        if self.surrogate is not None:
            found[f"surrogate ({len(self.surrogate.masks)} ablations)"] = (
                len(self.surrogate.masks),
                self.surrogate.scores,
            )
        rows = []
        for name, (forwards, scores) in found.items():
            agrees = agreement(scores, self.logprob_drop)
            rows.append(
                {"method": name, "forwards": forwards, "spearman": agrees.spearman, "same_top": agrees.top1}
            )
        rows.append(
            {"method": "leave-one-out", "forwards": len(self.chunks), "spearman": 1.0, "same_top": True}
        )
        return pd.DataFrame(rows)

    @property
    def verdict(self) -> str:
        """Whether the causal check supports the attention picture, raw and position-calibrated."""
        raw = verdict(self.ids, self.attention, self.logprob_drop, self.spearman, "Raw attention")
        calibrated = verdict(
            self.ids,
            self.calibrated_attention,
            self.logprob_drop,
            self.spearman_calibrated,
            "Position-calibrated attention",
        )
        return f"{raw} {calibrated}"

    @property
    def warnings(self) -> list[str]:
        """The caveats that change how the printed numbers read (what the attention averages, what
        "ignored" means, how far the Spearman goes, a cut answer): printed beside them, console included."""
        lines = [
            f"Attention is averaged over layers {_ranges(self.layers)} and heads {_ranges(self.heads)} "
            "(mean over layers, heads and answer tokens of the weight summed over each chunk's tokens).",
            f"Calibration (Hsieh et al. 2024): calibrated = attention - attention the same slot gets when the chunk "
            f'is replaced by a neutral dummy of about its token length ("{DUMMY_SENTENCE}" repeated and cut); '
            f"a chunk is flagged ignored when its calibrated attention is below {IGNORED_BELOW:g} x the dummy's.",
            f"Spearman over {len(self.chunks)} chunks is a coarse guide; 'supported' needs the same top chunk and "
            f"rho >= {SUPPORTED_RHO}.",
        ]
        if self.truncated:
            lines.append(
                f"The answer was cut at --max-new-tokens {self.max_new_tokens} before the model ended it."
            )
        return lines

    @property
    def caveats(self) -> list[str]:
        averaged, calibration, *rest = self.warnings
        return [
            CAUSATION_WARNING,
            ROW_CONVENTION,
            averaged,
            "Lookback ratio (Chuang et al. 2024): per head and answer step t >= 1, mean weight on the chunks' "
            "tokens / (that + mean weight on the t answer tokens generated before); step 0 has none and is left "
            "out; the map is the mean over steps.",
            calibration,
            "Causal check: each chunk removed from the prompt (the others renumbered), the same answer ids "
            "teacher-forced; drop = log p(answer | all chunks) - log p(answer | without it).",
            *rest,
        ]

    @property
    def table(self) -> pd.DataFrame:
        """One row per chunk (indexed by slot, 1-based, in prompt order)."""
        import pandas as pd

        frame = pd.DataFrame(
            {
                "id": self.ids,
                "tokens": list(self.chunk_token_counts),
                "attention": self.attention,
                "dummy_attention": self.dummy_attention,
                "calibrated_attention": self.calibrated_attention,
                "flag": self.flags,
                "answer_logprob_without": self.logprob_without,
                "logprob_drop": self.logprob_drop,
                "attention_rank": ranks(self.attention),
                "calibrated_rank": ranks(self.calibrated_attention),
                "ablation_rank": ranks(self.logprob_drop),
            },
            index=pd.RangeIndex(1, len(self.chunks) + 1, name="slot"),
        )
        if self.surrogate is not None:
            frame["surrogate_score"] = self.surrogate.scores
        if self.learned_attention is not None:
            frame["learned_attention"] = self.learned_attention
        return frame

    # -- files and display ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Everything needed to re-run the check: exact prompts, answer ids, and every number shown."""
        head_attention, token_attention = self.head_attention, self.token_attention
        chunks = []
        for c, chunk in enumerate(self.chunks):
            chunks.append(
                {
                    "slot": c + 1,
                    "id": chunk.id,
                    "text": chunk.text,
                    "tokens": self.chunk_token_counts[c],
                    "attention": json_number(self.attention[c]),
                    "calibrated_attention": json_number(self.calibrated_attention[c]),
                    "dummy_attention": json_number(self.dummy_attention[c]),
                    "dummy_text": self.dummy_texts[c],
                    "flag": self.flags[c],
                    "prompt_without": self.prompts_without[c],
                    "answer_logprob_without": json_number(self.logprob_without[c]),
                    "answer_token_logprobs_without": json_numbers(self.token_logprobs_without[c]),
                    "logprob_drop": json_number(self.logprob_drop[c]),
                    "attention_rank": int(ranks(self.attention)[c]),
                    "calibrated_rank": int(ranks(self.calibrated_attention)[c]),
                    "ablation_rank": int(ranks(self.logprob_drop)[c]),
                    "attention_by_answer_token": json_numbers(token_attention[:, c]),
                    "attention_by_layer_head": [json_numbers(row) for row in head_attention[:, :, c]],
                }
            )
        return {
            "format": FORMAT,
            "model": self.model,
            "question": self.question,
            "chat_template": self.chat_template,
            "prompt": self.prompt,
            "prompt_ids": list(self.prompt_ids),
            "answer": self.answer,
            "answer_ids": list(self.answer_ids),
            "answer_tokens": list(self.answer_tokens),
            "answer_source": "generated (greedy)" if self.generated else "given",
            "max_new_tokens": self.max_new_tokens,
            "truncated": self.truncated,
            "answer_logprob": json_number(self.answer_logprob),
            "answer_token_logprobs": json_numbers(self.token_logprobs),
            "layers": list(self.layers),
            "heads": list(self.heads),
            "row_convention": ROW_CONVENTION,
            "ignored_rule": f"calibrated_attention < {IGNORED_BELOW:g} * dummy_attention",
            "dummy_sentence": DUMMY_SENTENCE,
            "spearman": json_number(self.spearman),
            "spearman_calibrated": json_number(self.spearman_calibrated),
            "verdict": self.verdict,
            "chunks": chunks,
            "surrogate": None
            if self.surrogate is None
            else {
                "ablations": len(self.surrogate.masks),
                "keep_masks": [json_numbers(m) for m in self.surrogate.masks],
                "answer_logprobs": json_numbers(self.surrogate.logprobs),
                "scores": json_numbers(self.surrogate.scores),
                "intercept": json_number(self.surrogate.intercept),
                "r2": json_number(self.surrogate.r2),
                "seconds": self.surrogate.seconds,
            },
            "learned_attention": None
            if self.learned_attention is None
            else json_numbers(self.learned_attention),
            "agreement_with_leave_one_out": [
                {**row, "spearman": json_number(row["spearman"])} for row in self.costs.to_dict("records")
            ],
            "lookback_ratio": [json_numbers(row) for row in self.lookback],
            "caveats": self.caveats,
        }

    def to_pandas(self) -> pd.DataFrame:
        """:attr:`table`: one row per chunk."""
        return self.table

    def figure(self, **options: Any) -> Figure:
        """The matplotlib figure: heatmap, attention vs ablation bars, lookback map, caveats."""
        return report_figure(self)

    def page(self, **options: Any) -> str:
        """The report as one self-contained HTML fragment (its own scoped style)."""
        return report_body(self)

    def _title(self) -> str:
        return f"headmap rag · {self.model}"

    render = deprecated_alias("save", "render")
    plot = deprecated_alias("figure", "plot")


def _ranges(values: tuple[object, ...]) -> str:
    """``0..29`` for a full consecutive run of numbers or layer names, else the list."""
    numbers = [int(str(v).rsplit(".", 1)[-1]) if not isinstance(v, int) else v for v in values]
    if len(numbers) > 2 and numbers == list(range(numbers[0], numbers[0] + len(numbers))):
        return f"{numbers[0]}..{numbers[-1]}"
    return ", ".join(str(n) for n in numbers)
