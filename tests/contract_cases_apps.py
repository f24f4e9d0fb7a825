"""Contract cases: attribution and applications (Explanation, RagReport, BiasReport, PruneReport)."""

from contract_case import Case

APP_CASES: list[Case] = []
