"""Stage 5, analysis: per-head statistics streamed over long inputs and corpora."""

from headmap.analysis.stats import STATS, HeadStats, StatsCollector, collect_stats

__all__ = ["STATS", "HeadStats", "StatsCollector", "collect_stats"]
