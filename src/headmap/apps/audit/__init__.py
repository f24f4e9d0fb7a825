"""An audit record for one model decision: the evidence in plain language, causal checks and
provenance, in one document that ``verify`` can check again later.

>>> record = headmap.audit("smollm2", "The trophy didn't fit in the suitcase because it was too")
>>> record.save("record.pdf")
>>> headmap.verify("record.json").ok
"""

from headmap.apps.audit.record import FORMAT, AuditRecord
from headmap.apps.audit.run import audit
from headmap.apps.audit.verify import Mismatch, Verification, verify

__all__ = ["FORMAT", "AuditRecord", "Mismatch", "Verification", "audit", "verify"]
