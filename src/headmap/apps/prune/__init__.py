"""Head pruning: which attention heads a model can lose, tested by removing them, then cut out for real.

>>> report = prune(model, "corpora/sentences.txt", amount=0.3, out="pruned-minilm/")
>>> report.table            # quality per order and step
>>> report.figure()         # quality vs share of heads removed: importance, entropy and random orders

Orders come from head importance (Michel et al. 2019, recomputed after each step), random seeds and
attention entropy; quality is measured on held-out text with the heads gated off
(:func:`headmap.ablate`), and the chosen heads are then cut from the projections
(:func:`prune_heads`), GQA-aware, into a model that computes exactly what the gated one did.
"""

from headmap.apps.prune.physical import prune_heads
from headmap.apps.prune.pruning import Pruning
from headmap.apps.prune.report import PruneReport, read_report
from headmap.apps.prune.run import prune
from headmap.apps.prune.save import read_record, save_pruned

__all__ = ["PruneReport", "Pruning", "prune", "prune_heads", "read_record", "read_report", "save_pruned"]
