"""RAG debugging: which retrieved chunks an answer draws on, by attention and by removing them.

>>> report = rag(model, "What is the access code for the vault?", "corpora/rag/vault.jsonl")
>>> report.table            # per chunk: attention, calibrated attention, log-prob drop, flag
>>> report.save("rag.html")
>>> weights = calibrate_rag(model, examples)  # AT2 head weights learned on chunk ablations
>>> rag(model, question, chunks, answer=answer, calibration=weights).learned_attention

See :func:`rag`; attention is correlation, not causation, so every report sets each chunk's
attention beside the causal check (the answer's log-probability without the chunk).
"""

from headmap.apps.rag.calibrate import calibrate_rag
from headmap.apps.rag.chunks import Chunk, as_chunks, read_chunks
from headmap.apps.rag.report import RagReport
from headmap.apps.rag.run import rag

__all__ = ["Chunk", "RagReport", "as_chunks", "calibrate_rag", "rag", "read_chunks"]
