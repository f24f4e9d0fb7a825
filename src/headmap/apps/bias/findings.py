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
#: A head is a first-token sink when at least this share of its name attention is the weight on the
#: prompt's first token (which the name occupies): most of what reads as attention to the name is the
#: sink every head of a decoder keeps there, whatever the token.
SINK_SHARE = 0.5
#: Appended to a statistic's sentence when names repeat across pairs.
DEPENDENT = "the pairs share names, so these p-values and intervals overstate the evidence"
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


def _heads(report: BiasReport, heads: tuple[tuple[str, int], ...]) -> str:
    """``layer/head`` names, each first-token sink marked as such."""
    return ", ".join(
        f"{layer}/{head}" + (" [first-token sink]" if report.is_sink((layer, head)) else "")
        for layer, head in heads
    )


def _sinks_ablated(report: BiasReport) -> int:
    return sum(report.is_sink(h) for h in report.ablated)


def _who(report: BiasReport) -> str:
    """The ablated heads in words: "the heads that read the name" only when none is a first-token sink."""
    if _sinks_ablated(report):
        return "the heads with the largest name attention (first-token sinks among them)"
    return "the heads that read the name"


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
    if not report.independent and (t_sig or w_sig):
        verdict += f", but {DEPENDENT}"
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
        sink = " [first-token sink]" if report.sink_heads[li, hi] else ""
        line += (
            f"; the clearest is {report.layers[li]} head {report.heads[hi]}{sink} ({a} - {b} = "
            f"{stats['mean'][li, hi]:+.4f}, q = {stats['t_q'][li, hi]:.2g})"
        )
    if hits_t or hits_w:
        line += "".join(f"; {w}" for w in _head_cautions(report))
    lines.append(line + ".")

    change = report.ablation
    sinks = _sinks_ablated(report)
    if sinks:
        which = (
            f"Ablating the {report.k} heads with the largest name attention ({_heads(report, report.ablated)}; "
            f"{sinks} of them first-token sinks, whose name attention is the weight on the prompt's first "
            "token, not attention to the name)"
        )
    else:
        which = (
            f"Ablating the {report.k} heads that attend most to the name ({_heads(report, report.ablated)})"
        )
    lines.append(
        f"{which} moves the gap from {gap.mean:+.4g} to {report.gap_ablated.mean:+.4g}: change "
        f"{change.describe()}" + ("" if report.independent else f" ({DEPENDENT})") + "."
    )
    controls = [c.mean for c in report.controls]
    if controls:
        lines.append(
            f"{report.k} random other heads instead ({len(controls)} seeded sets) change it by "
            f"{', '.join(f'{c:+.4g}' for c in controls)}."
        )
    lines.append(causal_verdict(report))
    return lines


def _head_cautions(report: BiasReport) -> list[str]:
    """Short reasons the per-head differences may not be what they seem."""
    out = []
    if not report.independent:
        out.append(DEPENDENT.replace("p-values", "q-values"))
    counts = _token_counts(report)
    if counts[0] != counts[1]:
        out.append("the groups' names differ in token count, which alone can make heads differ")
    if report.sink_heads.any():
        out.append(f"{int(report.sink_heads.sum())} heads are first-token sinks")
    return out


def causal_verdict(report: BiasReport) -> str:
    """Whether removing the heads that read the name shrinks the gap, beyond what random heads do."""
    gap, change = report.gap, report.ablation
    who = _who(report)
    if not any(_significant(gap)):
        return (
            "With no gap detected, the ablation cannot show that these heads carry one; it shows how much they "
            "move both groups' outputs together."
        )
    if not _excludes_zero(change):
        return (
            f"The causal check does not support that {who} carry the gap: the interval of "
            "the change under their ablation includes 0."
        )
    shrinks = np.sign(change.mean) != np.sign(gap.mean) and abs(report.gap_ablated.mean) < abs(gap.mean)
    beyond = all(abs(change.mean) > abs(c.mean) for c in report.controls)
    if shrinks and beyond:
        return (
            f"The causal check supports the attention picture: removing {who} shrinks "
            "the gap, by more than removing random heads does."
        )
    if shrinks:
        return (
            f"Removing {who} shrinks the gap, but random heads move it as much: the change "
            "is not specific to them."
        )
    return f"Removing {who} does not shrink the gap (it grows or flips sign)."


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
    lines.append(_token_line(report))
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
    sink = _sink_line(report)
    if sink:
        lines.append(sink)
    lines.append(BENCHMARKS)
    return lines


def _token_counts(report: BiasReport) -> tuple[float, float]:
    """Mean number of name tokens (all slots) per prompt, for group A and group B."""
    a, b = (float(np.mean([len(p.name_tokens) for p in report.prompts if p.group == g])) for g in (0, 1))
    return a, b


def _token_line(report: BiasReport) -> str:
    counts = _token_counts(report)
    line = (
        f"The name's tokens (all its slots) number {counts[0]:.2f} on average for {report.labels[0]} and "
        f"{counts[1]:.2f} for {report.labels[1]}"
    )
    if counts[0] != counts[1]:
        line += (
            "; attention summed over a name grows with its tokens, so that difference alone can make heads "
            "differ between the groups"
        )
    return line + "."


def _sink_line(report: BiasReport) -> str | None:
    """The first-token sink warning, or None when no prompt's name covers its first token."""
    n = int(report.sink_prompts.sum())
    if not n:
        return None
    sinks = int(report.sink_heads.sum())
    return (
        f"The name is the first token of {n} of {len(report.prompts)} prompts: decoders put much of every "
        "head's attention on the first token (an attention sink), whatever it is, so name attention there "
        f"says little. {sinks} of {report.sink_heads.size} heads put at least {SINK_SHARE:.0%} of their name "
        "attention on that first token; they are marked as first-token sinks, not heads that attend to the "
        "name. Start the template with other words."
    )


def number_warnings(report: BiasReport) -> list[str]:
    """The caveats that change how the printed numbers read: names shared across pairs (p-values
    overstate), unequal name lengths (head differences), first-token sinks (name attention)."""
    out = []
    if not report.independent:
        out.append(report.pairing)
    counts = _token_counts(report)
    if counts[0] != counts[1]:
        out.append(_token_line(report))
    sink = _sink_line(report)
    if sink:
        out.append(sink)
    return out
