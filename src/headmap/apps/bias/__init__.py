"""Bias probe: does a model's output depend on which group a name comes from, and which heads carry it?

>>> report = bias_probe(model, "{name} has ten years of experience in accounting. Hire? Answer:",
...                     {"A": "names_a.txt", "B": "names_b.txt"}, "ten years of experience in accounting",
...                     target=" Yes")
>>> report.findings         # the output gap, the heads, the causal check, in sentences
>>> report.table            # per head: attention on name and evidence by group, paired statistics
>>> report.save("bias.html")

See :func:`bias_probe`. Attention is correlation, not causation, so every report sets the heads'
attention beside what ablating the heads that read the name does to the gap between the groups.
"""

from headmap.apps.bias.inputs import Group, read_names
from headmap.apps.bias.report import BiasReport
from headmap.apps.bias.run import bias_probe
from headmap.apps.bias.stats import PairedStats

__all__ = ["BiasReport", "Group", "PairedStats", "bias_probe", "read_names"]
