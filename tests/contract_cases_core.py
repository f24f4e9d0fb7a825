"""Contract cases: capture and analysis results (AttentionResult, HeadStats, HeadReport, HeadImportance)."""

from contract_case import Case

CORE_CASES: list[Case] = []
