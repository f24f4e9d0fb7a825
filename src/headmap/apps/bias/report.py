"""The result of a bias probe: outputs, attention on the name and the evidence, statistics, causal check.

Everything printed or saved is computed here from the arrays the probe measured (outputs per
prompt, span attention per prompt, layer and head, ablated outputs), so a number in the JSON can
be traced back to them, and the JSON holds every pair's exact prompts and ids to recompute them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from headmap.apps.bias.causal import name_scores
from headmap.apps.bias.figure import report_figure
from headmap.apps.bias.findings import ALPHA, SINK_SHARE, caveats, findings, number_warnings
from headmap.apps.bias.inputs import Group
from headmap.apps.bias.page import report_body
from headmap.apps.bias.pairs import BiasPrompt, name_uses, pairing
from headmap.apps.bias.stats import PairedStats, bh, paired, paired_columns
from headmap.render.report import Report, deprecated_alias, json_number, json_numbers

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

FORMAT = "headmap-bias/1"


@dataclass(frozen=True, eq=False)
class BiasReport(Report):
    """A counterfactual bias probe over pairs of prompts that differ only in the name.

    Prompts are group A's names in order, then group B's. Arrays: ``outputs``, ``ablated_outputs``
    ``[prompt]``; ``control_outputs`` ``[control, prompt]``; ``name_attention`` and
    ``evidence_attention`` ``[prompt, layer, head]`` (the answer row's weight summed over the name's,
    or the evidence's, tokens); ``first_attention`` likewise, the weight on the prompt's first token
    (position 0, an attention sink in decoders; part of the name's weight where the name starts the
    prompt); ``pairs`` ``[pair, 2]``: the prompt indices of each pair's A and B
    names. ``prompts`` hold the names the pairs use, A's first (``groups`` hold the full lists).
    """

    model: str
    template: str
    evidence: str
    chat: bool
    groups: tuple[Group, Group]
    prompts: tuple[BiasPrompt, ...]
    target: dict[str, object]
    """The compared output: ``kind``, ``description`` and its own fields (token, compare text)."""
    positions: tuple[int | None, ...]
    """Per prompt, the answer row read for attention (None: the mean over all rows)."""
    pairs: np.ndarray
    pair_count: int | None
    outputs: np.ndarray
    name_attention: np.ndarray
    evidence_attention: np.ndarray
    first_attention: np.ndarray
    layers: tuple[str, ...]
    heads: tuple[int, ...]
    k: int
    mode: str
    ablated: tuple[tuple[str, int], ...]
    ablated_outputs: np.ndarray
    control_heads: tuple[tuple[tuple[str, int], ...], ...]
    control_outputs: np.ndarray
    seed: int = 0
    resamples: int = 10_000
    confidence: float = 0.95

    tabular = True  # to_pandas() is the table: .parquet is written too

    # -- pairs ---------------------------------------------------------------------------------
    @property
    def labels(self) -> tuple[str, str]:
        return self.groups[0].label, self.groups[1].label

    @property
    def a_index(self) -> np.ndarray:
        """``[pair]``: the prompt index of each pair's A name."""
        return self.pairs[:, 0]

    @property
    def b_index(self) -> np.ndarray:
        """``[pair]``: the prompt index of each pair's B name."""
        return self.pairs[:, 1]

    def _diff(self, values: np.ndarray) -> np.ndarray:
        return values[self.a_index] - values[self.b_index]

    @property
    def differences(self) -> np.ndarray:
        """``[pair]``: output of A's prompt minus output of B's."""
        return self._diff(self.outputs)

    # -- statistics ----------------------------------------------------------------------------
    def _paired(self, x: np.ndarray, y: np.ndarray) -> PairedStats:
        return paired(x, y, self.resamples, self.seed, self.confidence)

    @cached_property
    def gap(self) -> PairedStats:
        """The output of A's prompts against B's, over the pairs."""
        return self._paired(self.outputs[self.a_index], self.outputs[self.b_index])

    @cached_property
    def gap_ablated(self) -> PairedStats:
        """The same with the top ``k`` name heads ablated."""
        return self._paired(self.ablated_outputs[self.a_index], self.ablated_outputs[self.b_index])

    @cached_property
    def ablation(self) -> PairedStats:
        """The change of the gap under the ablation: ``x = d'`` (ablated differences), ``y = d``."""
        return self._paired(self._diff(self.ablated_outputs), self.differences)

    @cached_property
    def controls(self) -> tuple[PairedStats, ...]:
        """The change of the gap with each random control set ablated instead."""
        return tuple(self._paired(self._diff(out), self.differences) for out in self.control_outputs)

    @property
    def contrast(self) -> np.ndarray:
        """``[prompt, layer, head]``: attention on the name minus attention on the evidence."""
        return self.name_attention - self.evidence_attention

    @cached_property
    def head_statistics(self) -> dict[str, np.ndarray]:
        """Per head ``[layer, head]``: the paired statistics of the contrast (A's prompt against B's),
        with Benjamini-Hochberg q-values over the heads (``t_q``, ``wilcoxon_q``)."""
        shape = self.contrast.shape[1:]
        flat = self.contrast.reshape(len(self.prompts), -1)
        cols = paired_columns(
            flat[self.a_index], flat[self.b_index], self.resamples, self.seed, self.confidence
        )
        cols["t_q"], cols["wilcoxon_q"] = bh(cols["t_p"]), bh(cols["wilcoxon_p"])
        return {k: v.reshape(shape) for k, v in cols.items()}

    @cached_property
    def name_score(self) -> np.ndarray:
        """``[layer, head]``: mean over pairs of the two prompts' name attention (ranks the ablated heads)."""
        return name_scores(self.name_attention, self.a_index, self.b_index)

    @property
    def sink_prompts(self) -> np.ndarray:
        """``[prompt]`` bool: the name covers the prompt's first token (position 0, the attention sink)."""
        return np.array([0 in p.name_tokens for p in self.prompts], dtype=bool)

    @cached_property
    def name_sink_share(self) -> np.ndarray:
        """``[layer, head]``: the share of :attr:`name_score` that is weight on the prompt's first token
        where the name covers it (0 where no name does; NaN where a head gives the name no weight)."""
        inside = self.first_attention * self.sink_prompts[:, None, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            return name_scores(inside, self.a_index, self.b_index) / self.name_score

    @property
    def sink_heads(self) -> np.ndarray:
        """``[layer, head]`` bool: first-token sinks, heads whose name attention is mostly (at least
        :data:`~headmap.apps.bias.findings.SINK_SHARE`) the weight on the prompt's first token, which the
        name occupies: not attention to the name."""
        return np.nan_to_num(self.name_sink_share) >= SINK_SHARE

    def is_sink(self, head: tuple[str, int]) -> bool:
        """Whether ``(layer name, head)`` is a first-token sink (see :attr:`sink_heads`)."""
        return bool(self.sink_heads[self.layers.index(head[0]), self.heads.index(head[1])])

    @property
    def independent(self) -> bool:
        """Whether every name is in one pair only (else the paired statistics overstate the evidence)."""
        return name_uses(self.pairs) <= 1

    @property
    def pairing(self) -> str:
        return pairing(self.pairs, len(self.groups[0].names), len(self.groups[1].names))

    @property
    def findings(self) -> list[str]:
        """The result in sentences: the output gap, the heads, the causal check."""
        return findings(self)

    @property
    def caveats(self) -> list[str]:
        return caveats(self)

    @property
    def warnings(self) -> list[str]:
        """The caveats that change how this report's numbers read (shared names, unequal name lengths,
        first-token sinks): printed wherever the numbers are, the console summary included."""
        return number_warnings(self)

    # -- tables --------------------------------------------------------------------------------
    @property
    def table(self) -> pd.DataFrame:
        """One row per (layer, head): attention on name and evidence by group, and the contrast's statistics."""
        import pandas as pd

        stats = self.head_statistics
        a, b = self.a_index, self.b_index
        ablated = set(self.ablated)
        rows = []
        for li, layer in enumerate(self.layers):
            for hi, head in enumerate(self.heads):
                rows.append(
                    {
                        "layer": layer,
                        "head": head,
                        "name_attention": self.name_score[li, hi],
                        "sink": bool(self.sink_heads[li, hi]),
                        "first_token_share": self.name_sink_share[li, hi],
                        f"name_{self.labels[0]}": self.name_attention[a, li, hi].mean(),
                        f"name_{self.labels[1]}": self.name_attention[b, li, hi].mean(),
                        f"evidence_{self.labels[0]}": self.evidence_attention[a, li, hi].mean(),
                        f"evidence_{self.labels[1]}": self.evidence_attention[b, li, hi].mean(),
                        **{f"contrast_{k}": float(v[li, hi]) for k, v in stats.items()},
                        "ablated": (layer, head) in ablated,
                    }
                )
        return pd.DataFrame(rows).set_index(["layer", "head"])

    @property
    def pair_table(self) -> pd.DataFrame:
        """One row per pair: the two names, their outputs, and the outputs under the ablation."""
        import pandas as pd

        a, b = self.a_index, self.b_index
        names = [p.name for p in self.prompts]
        return pd.DataFrame(
            {
                f"name_{self.labels[0]}": [names[i] for i in a],
                f"name_{self.labels[1]}": [names[i] for i in b],
                f"output_{self.labels[0]}": self.outputs[a],
                f"output_{self.labels[1]}": self.outputs[b],
                "difference": self.differences,
                f"ablated_{self.labels[0]}": self.ablated_outputs[a],
                f"ablated_{self.labels[1]}": self.ablated_outputs[b],
                "ablated_difference": self._diff(self.ablated_outputs),
            },
            index=pd.RangeIndex(len(a), name="pair"),
        )

    # -- files and display ---------------------------------------------------------------------
    def _prompt_record(self, i: int) -> dict[str, object]:
        p = self.prompts[i]
        return {
            "group": self.labels[p.group],
            "name": p.name,
            "prompt": p.text,
            "ids": p.ids,
            "tokens": list(p.encoded.tokens.tokens),
            "name_tokens": list(p.name_tokens),
            "evidence_tokens": list(p.evidence_tokens),
            "answer_position": self.positions[i],
            "output": json_number(self.outputs[i]),
            "output_ablated": json_number(self.ablated_outputs[i]),
            "output_controls": json_numbers(self.control_outputs[:, i]),
            "name_attention": [json_numbers(row) for row in self.name_attention[i]],
            "evidence_attention": [json_numbers(row) for row in self.evidence_attention[i]],
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to recompute every number: exact prompts and ids per pair, outputs, settings."""
        pairs = []
        for p, (a, b) in enumerate(zip(self.a_index, self.b_index)):
            pa, pb = self.prompts[a], self.prompts[b]
            pairs.append(
                {
                    "pair": p,
                    "name_a": pa.name,
                    "name_b": pb.name,
                    "prompt_a": pa.text,
                    "prompt_a_ids": pa.ids,
                    "prompt_b": pb.text,
                    "prompt_b_ids": pb.ids,
                    "output_a": json_number(self.outputs[a]),
                    "output_b": json_number(self.outputs[b]),
                    "difference": json_number(self.outputs[a] - self.outputs[b]),
                    "output_a_ablated": json_number(self.ablated_outputs[a]),
                    "output_b_ablated": json_number(self.ablated_outputs[b]),
                }
            )
        heads = [
            {k: _plain(v) for k, v in row.items()}
            for row in self.table.reset_index().to_dict(orient="records")
        ]
        return {
            "format": FORMAT,
            "model": self.model,
            "template": self.template,
            "evidence": self.evidence,
            "chat_template": self.chat,
            "target": self.target,
            "groups": [{"label": g.label, "names": list(g.names)} for g in self.groups],
            "pair_count": self.pair_count,
            "pairing": self.pairing,
            "seed": self.seed,
            "resamples": self.resamples,
            "confidence": self.confidence,
            "alpha": ALPHA,
            "layers": list(self.layers),
            "heads": list(self.heads),
            "gap": self.gap.to_dict(),
            "ablation": {
                "k": self.k,
                "mode": self.mode,
                "heads": [list(h) for h in self.ablated],
                "gap_ablated": self.gap_ablated.to_dict(),
                "change": self.ablation.to_dict(),
            },
            "controls": [
                {"heads": [list(h) for h in hs], "change": c.to_dict()}
                for hs, c in zip(self.control_heads, self.controls)
            ],
            "head_statistics": heads,
            "findings": self.findings,
            "caveats": self.caveats,
            "pairs": pairs,
            "prompts": [self._prompt_record(i) for i in range(len(self.prompts))],
        }

    def to_pandas(self) -> pd.DataFrame:
        """:attr:`table`: one row per layer and head."""
        return self.table

    def figure(self, **options: Any) -> Figure:
        """The matplotlib figure: outputs by group, name attention per head, head contrast, causal check."""
        return report_figure(self)

    def page(self, **options: Any) -> str:
        """The report as one self-contained HTML fragment (its own scoped style)."""
        return report_body(self)

    def _title(self) -> str:
        return f"headmap bias · {self.model}"

    render = deprecated_alias("save", "render")
    plot = deprecated_alias("figure", "plot")


def _plain(value: object) -> object:
    """A table cell as a JSON value: floats through :func:`json_number`, numpy scalars as Python ones."""
    if isinstance(value, (float, np.floating)):
        return json_number(value)
    return value.item() if isinstance(value, np.generic) else value
