"""Stage 6, attribution: attention beside causal evidence. Attention, rollout and flow from the
captured maps; Integrated Gradients, attention x gradient and input x gradient through captum and
the capture tap; occlusion as the causal reference; and how far they agree."""

from headmap.attribution.base import Attribution, Method, Problem
from headmap.attribution.calibrate import calibrate
from headmap.attribution.calibrated import Calibration, load_calibration
from headmap.attribution.explain import METHODS, explain
from headmap.attribution.explanation import Explanation
from headmap.attribution.faithfulness_report import FaithfulnessReport, faithfulness
from headmap.attribution.generation_report import GenerationReport, explain_generation

__all__ = [
    "METHODS",
    "Attribution",
    "Calibration",
    "Explanation",
    "FaithfulnessReport",
    "GenerationReport",
    "Method",
    "Problem",
    "calibrate",
    "explain",
    "explain_generation",
    "faithfulness",
    "load_calibration",
]
