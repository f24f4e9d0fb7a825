"""Stage 5, analysis: per-head statistics streamed over long inputs and corpora, head roles and
distances, ablation and importance, and a training monitor."""

from headmap.analysis.ablation import ablate
from headmap.analysis.importance import HeadImportance, head_importance
from headmap.analysis.monitor import record_heads
from headmap.analysis.pictures import Picture
from headmap.analysis.report import HeadReport, head_report
from headmap.analysis.stats import STATS, HeadStats, StatsCollector, collect_stats

__all__ = ["STATS", "HeadStats", "StatsCollector", "collect_stats"]
__all__ += [
    "HeadImportance",
    "HeadReport",
    "Picture",
    "ablate",
    "head_importance",
    "head_report",
    "record_heads",
]
