"""The probe's result in sentences (findings) and what a reader must know to weigh it (caveats)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from headmap.result import CAUSATION_WARNING

if TYPE_CHECKING:
    from headmap.apps.bias.report import BiasReport
    from headmap.apps.bias.stats import PairedStats

#: Significance level of every sentence that says "differ" (p or BH q below it).
ALPHA = 0.05
BENCHMARKS = (
    "One template and two lists of names are a probe, not a bias audit: the result can change with the "
    "wording, the names, the target and the model's sampling; broader benchmarks test many contexts, "
    "e.g. CrowS-Pairs (Nangia et al. 2020, 1,508 sentence pairs) and BBQ (Parrish et al. 2022, ambiguous "
    "and disambiguated questions)."
)


def output_name(report: BiasReport) -> str:
    """What the compared number is, short: ``log p('Yes')``, ``cosine with '...'``, or the function's name."""
    target = report.target
    if target["kind"] in ("next-token", "masked-token"):
        return f"log p({target['token']!r})"
    if target["kind"] == "cosine":
        return f"cosine with {target['compare']!r}"
    return str(target["description"])


def _significant(stats: PairedStats) -> tuple[bool, bool]:
    return (
        math.isfinite(stats.t_p) and stats.t_p < ALPHA,
        math.isfinite(stats.wilcoxon_p) and stats.wilcoxon_p < ALPHA,
    )


def _excludes_zero(stats: PairedStats) -> bool:
    return stats.ci_low > 0 or stats.ci_high < 0


def _heads(heads: tuple[tuple[str, int], ...]) -> str:
    return ", ".join(f"{layer}/{head}" for layer, head in heads)


def findings(report: BiasReport) -> list[str]:
    """The output gap, the heads whose name-vs-evidence attention differs, and the causal check."""
    a, b = report.labels
    gap = report.gap
    t_sig, w_sig = _significant(gap)
    if t_sig and w_sig:
        verdict = f"both tests find a difference at the {ALPHA:g} level"
    elif t_sig or w_sig:
        verdict = (
            f"only the {'t-test' if t_sig else 'Wilcoxon test'} finds a difference at the {ALPHA:g} level"
        )
    else:
        verdict = (
            f"neither test finds a difference at the {ALPHA:g} level, which is not evidence of none: the "
            "interval holds the gaps these pairs cannot rule out"
        )
    lines = [f"{output_name(report)}, group {a} minus group {b}: {gap.describe()}; {verdict}."]

    stats = report.head_statistics
    n_heads = stats["t_q"].size
    hits_t = int(np.sum(stats["t_q"] < ALPHA))
    hits_w = int(np.sum(stats["wilcoxon_q"] < ALPHA))
    line = (
        f"{hits_t} of {n_heads} heads differ between the groups in attention on the name minus attention on the "
        f"evidence (paired t-test, Benjamini-Hochberg q < {ALPHA:g}; Wilcoxon: {hits_w})"
    )
    if hits_t:
        q = np.where(np.isfinite(stats["t_q"]), stats["t_q"], np.inf)
        li, hi = np.unravel_index(int(np.argmin(q)), q.shape)
        line += (
            f"; the clearest is {report.layers[li]} head {report.heads[hi]} ({a} - {b} = "
            f"{stats['mean'][li, hi]:+.4f}, q = {stats['t_q'][li, hi]:.2g})"
        )
    lines.append(line + ".")

    change = report.ablation
    lines.append(
        f"Ablating the {report.k} heads that attend most to the name ({_heads(report.ablated)}) moves the "
        f"gap from {gap.mean:+.4g} to {report.gap_ablated.mean:+.4g}: change {change.describe()}."
    )
    controls = [c.mean for c in report.controls]
    if controls:
        lines.append(
            f"{report.k} random other heads instead ({len(controls)} seeded sets) change it by "
            f"{', '.join(f'{c:+.4g}' for c in controls)}."
        )
    lines.append(causal_verdict(report))
    return lines


def causal_verdict(report: BiasReport) -> str:
    """Whether removing the heads that read the name shrinks the gap, beyond what random heads do."""
    gap, change = report.gap, report.ablation
    if not any(_significant(gap)):
        return (
            "With no gap detected, the ablation cannot show that these heads carry one; it shows how much they "
            "move both groups' outputs together."
        )
    if not _excludes_zero(change):
        return (
            "The causal check does not support that the heads reading the name carry the gap: the interval of "
            "the change under their ablation includes 0."
        )
    shrinks = np.sign(change.mean) != np.sign(gap.mean) and abs(report.gap_ablated.mean) < abs(gap.mean)
    beyond = all(abs(change.mean) > abs(c.mean) for c in report.controls)
    if shrinks and beyond:
        return (
            "The causal check supports the attention picture: removing the heads that read the name shrinks "
            "the gap, by more than removing random heads does."
        )
    if shrinks:
        return (
            "Removing the heads that read the name shrinks the gap, but random heads move it as much: the change "
            "is not specific to them."
        )
    return "Removing the heads that read the name does not shrink the gap (it grows or flips sign)."


def _ranges(values: tuple[object, ...]) -> str:
    """``0..29`` for a consecutive run of numbers or layer names, else the list."""
    numbers = [int(str(v).rsplit(".", 1)[-1]) for v in values]
    if len(numbers) > 2 and numbers == list(range(numbers[0], numbers[0] + len(numbers))):
        return f"{numbers[0]}..{numbers[-1]}"
    return ", ".join(str(n) for n in numbers)


def caveats(report: BiasReport) -> list[str]:
    lines = [CAUSATION_WARNING]
    if all(p is None for p in report.positions):
        lines.append(
            "The output pools every token, so attention is the mean over all rows (special tokens "
            "included) of each row's weight on the span."
        )
    elif report.target["kind"] == "masked-token":
        lines.append("Attention is read from the row of the mask token whose prediction is compared.")
    else:
        lines.append(
            "Attention is read from the row of the last prompt token, the position that predicts the target."
        )
    lines.append(
        f"Layers {_ranges(report.layers)} and heads {_ranges(report.heads)} were captured. Name attention is "
        "the weight summed over the name's tokens (a name of several tokens sums several weights); evidence "
        f"attention likewise over the tokens of {report.evidence!r}."
    )
    counts = [np.mean([len(p.name_tokens) for p in report.prompts if p.group == g]) for g in (0, 1)]
    line = (
        f"The name's tokens (all its slots) number {counts[0]:.2f} on average for {report.labels[0]} and "
        f"{counts[1]:.2f} for {report.labels[1]}"
    )
    if counts[0] != counts[1]:
        line += (
            "; attention summed over a name grows with its tokens, so that difference alone can make heads "
            "differ between the groups"
        )
    lines.append(line + ".")
    lines.append(report.pairing)
    lines.append(
        f"Statistics over pairs: paired t-test (scipy ttest_rel), Wilcoxon signed-rank (scipy, zero "
        f"differences dropped), Cohen's d_z = mean / sd (ddof 1), {report.confidence:.0%} percentile "
        f"bootstrap interval ({report.resamples} resamples, seed {report.seed}); per head, the contrast "
        f"(name minus evidence, A's prompt minus B's) with Benjamini-Hochberg over {report.name_score.size} "
        "heads."
    )
    how = (
        "output set to zero"
        if report.mode == "zero"
        else "output replaced by its mean over the prompt's tokens"
    )
    lines.append(
        f"Causal check: the {report.k} heads with the largest name attention (mean over all pairs of both "
        f"prompts' weight on the name) ablated together ({report.mode}: each head's {how} before the output "
        f"projection); {len(report.control_heads)} control sets of {report.k} random other heads (seed "
        f"{report.seed})."
    )
    if report.target["kind"] == "next-token" and any(0 in p.name_tokens for p in report.prompts):
        lines.append(
            "The name is the first token of the prompt: decoders put much of every head's attention on the "
            "first token (an attention sink), so name attention there says little: start the template with "
            "other words."
        )
    lines.append(BENCHMARKS)
    return lines
