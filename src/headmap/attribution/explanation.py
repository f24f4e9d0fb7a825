"""The result of :func:`headmap.explain`: every method's scores over one token (or word) axis,
the explained output, and how far the methods agree.

Scores are ``float64`` arrays over the units of :attr:`Explanation.axis`. A word's score is the sum
of its tokens' scores (attention to a word is the attention to its pieces together, as in the
word view of the maps), except occlusion, which removes the whole word and measures it. NaN marks
a unit a method did not measure (occlusion leaves special tokens in place).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from headmap.attribution.agreement import agreement_table, causal_agreement
from headmap.attribution.drawing import figure as draw_figure
from headmap.attribution.page import fragment
from headmap.errors import HeadmapError
from headmap.render.report import Report, deprecated_alias, json_number, read_json
from headmap.result import CAUSATION_WARNING
from headmap.tokens import Tokens

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

FORMAT = "headmap.explanation/1"

#: What each method's picture does and does not say; shown with every rendering.
METHOD_NOTES = {
    "attention": "attention: where the chosen heads look from the explained position, not why the model decides",
    "rollout": "rollout: attention traced through the layers as if tokens mixed linearly (0.5 A + 0.5 I); "
    "it ignores the values, the MLPs and the nonlinearities",
    "flow": "flow: max-flow through the same layered graph as rollout, normalized to sum 1; same assumptions",
    "ig": "ig: Integrated Gradients on the input embeddings; scores sum to F(x) - F(baseline) up to the delta",
    "input_x_gradient": "input_x_gradient: a first-order (local) estimate; it can miss saturated effects",
    "attention_x_gradient": "attention_x_gradient: attention weight times its gradient, summed over heads "
    "and query rows of the chosen layer; local, like every gradient",
    "occlusion": "occlusion: the drop of the output when the word is removed (the causal reference); "
    "a shortened text may be unnatural to the model, and words can matter only together",
}


def ig_notes(ig: dict[str, Any]) -> list[str]:
    """What IG's record means for reading its scores: a token held fixed, a missed completeness."""
    notes = []
    if str(ig.get("baseline_name", "")).endswith("+first"):
        notes.append(
            "IG held token 0 at its own embedding along the path (+first): its IG score is 0 by "
            "construction, not a finding"
        )
    if not ig.get("converged"):
        notes.append(
            "IG did not converge: its scores do not add up to F(x) - F(baseline), so read them as rough; "
            "more steps (--max-steps) or another baseline (--baseline, see benchmarks/README.md "
            "'Integrated Gradients baselines') may converge"
        )
    return notes


@dataclass(frozen=True)
class Explanation(Report):
    """Attributions of one explained output by several methods, on one axis.

    ``tokens``/``words`` are the two axes and ``groups`` the tokens of each word; ``unit`` says
    which one :attr:`scores`, :attr:`table` and :meth:`agreement` use (:meth:`to_words` switches).
    ``output`` is F(x), the explained output on the text; ``target`` says what it is.
    """

    model: str
    tokens: Tokens
    words: Tokens
    groups: tuple[tuple[int, ...], ...]
    target: dict[str, object]
    output: float
    token_scores: dict[str, np.ndarray]
    word_scores: dict[str, np.ndarray]
    signed: dict[str, bool]
    info: dict[str, dict[str, object]]
    visible: np.ndarray  # [token] bool: the output can depend on the token
    unit: str = "token"
    notes: tuple[str, ...] = field(default=())

    tabular = True  # to_pandas() is the table: .parquet is written too

    # -- views -------------------------------------------------------------------------------
    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.token_scores)

    @property
    def axis(self) -> Tokens:
        """The units the scores are over: tokens, or words after :meth:`to_words`."""
        return self.words if self.unit == "word" else self.tokens

    @property
    def scores(self) -> dict[str, np.ndarray]:
        """``{method: [unit] scores}`` over :attr:`axis`."""
        return dict(self.word_scores if self.unit == "word" else self.token_scores)

    @property
    def baseline_output(self) -> float | None:
        """F(baseline) of Integrated Gradients, when IG ran."""
        value = self.info.get("ig", {}).get("baseline_output")
        return None if value is None else float(value)  # type: ignore[arg-type]  # the IG info record holds JSON values (object)

    @property
    def included(self) -> np.ndarray:
        """``[unit]`` True where agreement is measured: not special, and visible to the output."""
        visible = (
            self.visible
            if self.unit == "token"
            else np.array([self.visible[list(g)].any() for g in self.groups])
        )
        return visible & ~np.array(self.axis.special, dtype=bool)

    @property
    def flags(self) -> dict[str, str]:
        """``{method: flag}`` for methods whose scores must not be read as they stand: IG that did not
        converge (its scores miss F(x) - F(baseline) by more than the rule allows)."""
        ig = self.info.get("ig")
        if ig and not ig.get("converged"):
            return {"ig": "NOT converged"}
        return {}

    def label(self, method: str) -> str:
        """The method's name as every output shows it, with its flag: ``ig (NOT converged)``."""
        flag = self.flags.get(method)
        return f"{method} ({flag})" if flag else method

    def to_words(self) -> Explanation:
        """The same explanation over words (sum over a word's tokens; occlusion removes the word)."""
        return replace(self, unit="word")

    def to_tokens(self) -> Explanation:
        return replace(self, unit="token")

    @property
    def table(self) -> pd.DataFrame:
        """One row per unit: its text, whether agreement counts it, and every method's score."""
        import pandas as pd

        frame = pd.DataFrame({self.unit: list(self.axis.tokens), "included": self.included})
        for name, values in self.scores.items():
            frame[name] = values
        return frame

    def agreement(self) -> pd.DataFrame:
        """Spearman and Kendall (signed and absolute) between every pair of methods, over the
        included units; rows with ``with_occlusion`` say how causal each picture is."""
        return agreement_table(self.scores, self.included)

    def causal_agreement(self) -> pd.DataFrame:
        """Each method's rank agreement with occlusion (empty when occlusion did not run)."""
        return causal_agreement(self.agreement())

    def caveats(self) -> list[str]:
        """The warnings every rendering carries: causation, each method's limits, the IG check."""
        lines = [CAUSATION_WARNING]
        for name in self.methods:
            note = METHOD_NOTES.get(name)
            layers = self.info.get(name, {}).get("layers")
            if note and name in ("attention", "attention_x_gradient") and layers:
                note += f" (layers {', '.join(str(x) for x in cast(Sequence[object], layers))}, heads {self.info[name].get('heads')})"
            if note:
                lines.append(note)
        ig = self.info.get("ig")
        if ig:
            verdict = "converged" if ig.get("converged") else "did NOT converge"
            lines.append(
                f"IG {verdict}: delta {float(ig['delta']):+.2e} with {ig['steps']} steps "  # type: ignore[arg-type]  # the IG info record holds JSON values (object)
                f"(rule: |delta| <= {float(ig['tolerance']):.0%} of |F(x) - F(baseline)|); "  # type: ignore[arg-type]  # the IG info record holds JSON values (object)
                f"baseline: {ig['baseline']}"
            )
            lines += ig_notes(ig)
        lines.append(
            "word scores are the sum over the word's tokens, except occlusion, which removes the whole "
            "word; agreement leaves out special tokens and tokens the output cannot see"
        )
        return [*lines, *self.notes]

    # -- output ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Everything needed to recompute the checks, JSON-ready (NaN becomes null)."""
        baseline = self.baseline_output
        ig = self.info.get("ig", {})
        data = {
            "format": FORMAT,
            "model": self.model,
            "text": self.tokens.text,
            "target": self.target,
            "output": self.output,
            "baseline_output": baseline,
            "ig": {
                k: ig.get(k)
                for k in ("delta", "steps", "converged", "tolerance", "baseline", "baseline_name")
            }
            if ig
            else None,
            "tokens": self.tokens.to_dict(),
            "words": self.words.to_dict(),
            "word_groups": [list(g) for g in self.groups],
            "visible": [bool(v) for v in self.visible],
            "methods": {
                name: {
                    "signed": self.signed[name],
                    "flag": self.flags.get(name),
                    "token_scores": self.token_scores[name].tolist(),
                    "word_scores": self.word_scores[name].tolist(),
                    "info": self.info.get(name, {}),
                }
                for name in self.methods
            },
            "agreement": {
                "words": self.to_words().agreement().to_dict("records"),
                "tokens": self.to_tokens().agreement().to_dict("records"),
            },
            "notes": list(self.notes),
            "caveats": self.caveats(),
        }
        return _json_ready(data)  # type: ignore[return-value]  # _json_ready keeps the dict's shape

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Explanation:
        """Inverse of :meth:`to_dict`."""
        if data.get("format") != FORMAT:
            raise HeadmapError(
                f"not a headmap explanation (format {data.get('format')!r}, expected {FORMAT!r})"
            )
        methods: dict[str, dict[str, Any]] = data["methods"]

        def array(values: list[float | None]) -> np.ndarray:
            return np.array([np.nan if v is None else v for v in values], dtype=np.float64)

        return cls(
            model=str(data["model"]),
            tokens=Tokens.from_dict(data["tokens"]),
            words=Tokens.from_dict(data["words"]),
            groups=tuple(tuple(int(i) for i in g) for g in data["word_groups"]),
            target=dict(data["target"]),
            output=float(data["output"]),
            token_scores={m: array(v["token_scores"]) for m, v in methods.items()},
            word_scores={m: array(v["word_scores"]) for m, v in methods.items()},
            signed={m: bool(v["signed"]) for m, v in methods.items()},
            info={m: dict(v.get("info", {})) for m, v in methods.items()},
            visible=np.array(data["visible"], dtype=bool),
            notes=tuple(str(n) for n in data.get("notes", [])),
        )

    @classmethod
    def load(cls, path: str | Path) -> Explanation:
        """Read an explanation written by :meth:`save` as ``.json``."""
        path = Path(path)
        data = read_json(path, "explanation")
        if not isinstance(data, dict):
            raise HeadmapError(f"{path} is not a headmap explanation")
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise HeadmapError(
                f"{path} is a corrupt headmap explanation ({type(exc).__name__}: {exc})"
            ) from None

    def save(self, path: str | Path, **options: Any) -> Path:
        """Write the explanation; the extension picks the format (see :meth:`formats`), none means ``.json``."""
        path = Path(path)
        return super().save(path if path.suffix else path.with_suffix(".json"), **options)

    def to_pandas(self) -> pd.DataFrame:
        """:attr:`table`: one row per unit."""
        return self.table

    def figure(self, max_label: int = 14, **options: Any) -> Figure:
        """The static figure (one row of coloured words per method, agreement and caveats)."""
        return draw_figure(self, max_label=max_label)

    def page(self, **options: Any) -> str:
        """The self-contained HTML fragment (also the notebook display), with the full JSON in a
        non-executed ``<script type="application/json">`` block."""
        return fragment(self)

    def _title(self) -> str:
        return f"headmap explain · {self.model}"

    render = deprecated_alias("save", "render")
    plot = deprecated_alias("figure", "plot")

    def __repr__(self) -> str:
        return (
            f"Explanation(model={self.model!r}, {self.unit}s={len(self.axis)}, target={self.target.get('description')!r}, "
            f"output={self.output:.6g}, methods={list(self.methods)})"
        )


def _json_ready(value: object) -> object:
    """NaN and infinities become null (JSON has no NaN); numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return json_number(value)
    return value
