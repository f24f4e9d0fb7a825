"""Stage 6, attribution: attention beside causal evidence. Attention, rollout and flow from the
captured maps; Integrated Gradients, attention x gradient and input x gradient through captum and
the capture tap; occlusion as the causal reference; and how far they agree."""

from headmap.attribution.base import Attribution, Method, Problem
from headmap.attribution.explain import METHODS, explain
from headmap.attribution.explanation import Explanation
from headmap.attribution.faithfulness_report import FaithfulnessReport, faithfulness

__all__ = [
    "METHODS",
    "Attribution",
    "Explanation",
    "FaithfulnessReport",
    "Method",
    "Problem",
    "explain",
    "faithfulness",
]
