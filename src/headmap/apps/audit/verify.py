"""``verify()``: re-run a saved audit record and say whether every number matches.

First every recorded file (model weights, tokenizer, calibration) is hashed again: a missing or
changed file is one :class:`HeadmapError` line naming it and its expected sha256. Then the model is
loaded with the recorded dtype and device and the record is computed again from its settings.

Which numbers must match how (:func:`tolerance`): on the CPU in float32 every forward pass is
deterministic, so log-probabilities, alternatives, attention, rollout, flow, occlusion, head
ablations, faithfulness curves and role statistics are compared bitwise (exact equality). Numbers
that go through a backward pass (Integrated Gradients, input x gradient, attention x gradient, and
the agreements and faithfulness of those methods) may sum in another order from one run to the
next, so they get :data:`GRADIENT_ATOL` (absolute) plus :data:`GRADIENT_RTOL` (relative). On any
other device or dtype every number gets :data:`DEVICE_ATOL` and :data:`DEVICE_RTOL`. Strings (tokens,
roles) must be equal. The summary, caveats and provenance are not compared: they are derived from
the compared numbers, or describe the run itself.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headmap.apps.audit.provenance import check_files, runtime, sha256_text, versions
from headmap.apps.audit.record import AuditRecord
from headmap.apps.audit.run import compute
from headmap.errors import HeadmapError
from headmap.models import LoadedModel, load

#: Sections of a record whose numbers are compared.
COMPARED = ("decision", "explanation", "agreement_with_occlusion", "faithfulness", "heads", "causal")
#: Keys inside those sections that are derived text, not numbers.
SKIPPED = frozenset({"caveats", "notes", "chosen_by", "descriptions"})
GRADIENT_METHODS = frozenset({"ig", "input_x_gradient", "attention_x_gradient"})
GRADIENT_ATOL, GRADIENT_RTOL = 1e-6, 1e-6
DEVICE_ATOL, DEVICE_RTOL = 1e-4, 1e-4


@dataclass(frozen=True)
class Mismatch:
    """One number (or string) that differs: where in the record, recorded and recomputed values."""

    path: str
    recorded: Any
    found: Any
    rule: str

    def __str__(self) -> str:
        return f"{self.path}: recorded {self.recorded!r}, found {self.found!r} ({self.rule})"


@dataclass(frozen=True)
class Verification:
    """The outcome: ``ok`` when every value matched; ``changed_inputs`` says what differs from the
    recorded run (versions, device, dtype, threads, text) when something did not."""

    ok: bool
    compared: int
    mismatches: list[Mismatch] = field(default_factory=list)
    changed_inputs: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def report(self, limit: int = 20) -> str:
        """Plain text for the command line."""
        if self.ok:
            return f"verified: all {self.compared} recorded values match (files unchanged)"
        lines = [f"NOT verified: {len(self.mismatches)} of {self.compared} values differ (files unchanged)"]
        lines += [f"  {m}" for m in self.mismatches[:limit]]
        if len(self.mismatches) > limit:
            lines.append(f"  ... and {len(self.mismatches) - limit} more")
        if self.changed_inputs:
            lines.append("inputs that differ from the recorded run: " + "; ".join(self.changed_inputs))
        else:
            lines.append("no recorded input differs: the computation was not deterministic on this machine")
        return "\n".join(lines)


def tolerance(path: str, gradient: bool, exact_runtime: bool) -> tuple[float, float, str]:
    """``(atol, rtol, rule)`` for the number at ``path``."""
    if not exact_runtime:
        return DEVICE_ATOL, DEVICE_RTOL, f"atol {DEVICE_ATOL:g} + rtol {DEVICE_RTOL:g} off CPU float32"
    if gradient:
        return GRADIENT_ATOL, GRADIENT_RTOL, f"gradient: atol {GRADIENT_ATOL:g} + rtol {GRADIENT_RTOL:g}"
    return 0.0, 0.0, "bitwise"


def _is_gradient(node: dict[str, Any]) -> bool:
    return any(str(node.get(k)) in GRADIENT_METHODS for k in ("method", "method_a", "method_b"))


def leaves(node: Any, path: str = "", gradient: bool = False) -> Iterator[tuple[str, Any, bool]]:
    """Every leaf of ``node`` as ``(path, value, gradient)``; ``gradient`` is set below a gradient
    method's key or in a row that names one."""
    if isinstance(node, dict):
        gradient = gradient or _is_gradient(node)
        for key, value in node.items():
            if key in SKIPPED:
                continue
            yield from leaves(
                value, f"{path}.{key}" if path else str(key), gradient or key in GRADIENT_METHODS
            )
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from leaves(value, f"{path}[{i}]", gradient)
    else:
        yield path, node, gradient


def _close(a: Any, b: Any, atol: float, rtol: float) -> bool:
    if (
        isinstance(a, bool)
        or isinstance(b, bool)
        or not isinstance(a, (int, float))
        or not isinstance(b, (int, float))
    ):
        return a == b
    if atol == 0 and rtol == 0:
        return a == b
    return math.isclose(float(a), float(b), rel_tol=rtol, abs_tol=atol)


def compare(
    recorded: dict[str, Any], found: dict[str, Any], exact_runtime: bool
) -> tuple[int, list[Mismatch]]:
    """``(values compared, mismatches)`` between two records' :data:`COMPARED` sections."""
    old = list(leaves({k: recorded.get(k) for k in COMPARED}))
    new = {path: value for path, value, _ in leaves({k: found.get(k) for k in COMPARED})}
    mismatches = []
    for path, value, gradient in old:
        atol, rtol, rule = tolerance(path, gradient, exact_runtime)
        if path not in new:
            mismatches.append(Mismatch(path, value, None, "missing in the new run"))
        elif not _close(value, new[path], atol, rtol):
            mismatches.append(Mismatch(path, value, new[path], rule))
    paths = {path for path, _, _ in old}
    mismatches += [Mismatch(p, None, new[p], "not in the record") for p in new if p not in paths]
    return len(old), mismatches


def changed_inputs(data: dict[str, Any], loaded: LoadedModel) -> list[str]:
    """What differs between the recorded run and this one, besides the (checked) files."""
    p = data["provenance"]
    out = []
    now = versions()
    for name, before in p["versions"].items():
        if now.get(name) != before:
            out.append(f"{name} {before} -> {now.get(name)}")
    here = runtime(loaded)
    for key in ("dtype", "device", "threads", "platform", "deterministic_algorithms"):
        if here.get(key) != p["runtime"].get(key):
            out.append(f"{key} {p['runtime'].get(key)} -> {here.get(key)}")
    if p.get("text_sha256") and sha256_text(data["settings"]["text"]) != p["text_sha256"]:
        out.append("the text in the record's settings is not the text that was audited (its sha256 differs)")
    return out


def verify(record: AuditRecord | str | Path, device: str | None = None) -> Verification:
    """Re-run ``record`` (an :class:`AuditRecord` or its ``.json``) and compare every number.

    Raises :class:`HeadmapError` (one line) when a recorded file is missing or changed, or the
    record names no files. ``device``: run there instead of the recorded device (then every number
    gets the device tolerance).
    """
    rec = record if isinstance(record, AuditRecord) else AuditRecord.load(record)
    data = rec.data
    if not rec.verifiable:
        raise HeadmapError(
            "this record names no model files (the model was built in memory): it cannot be verified; "
            "audit a model given by name, folder or .gguf file"
        )
    try:
        check_files(data["provenance"]["files"])
        recorded = data["provenance"]["runtime"]
        where = device or recorded["device"]
        loaded = load(data["settings"]["model"], dtype=recorded["dtype"], device=where)
        exact = where == "cpu" and recorded["dtype"] == "float32" and device in (None, "cpu")
        found = json.loads(json.dumps(compute(loaded, data["settings"]), allow_nan=False))
    except HeadmapError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        # A hand-edited record without a setting the run needs: one line, not a traceback.
        raise HeadmapError(
            f"corrupt audit record: {type(exc).__name__} {exc} (re-create it with headmap audit)"
        ) from None
    count, mismatches = compare(data, found, exact)
    changed = changed_inputs(data, loaded) if mismatches else []
    return Verification(not mismatches, count, mismatches, changed)


__all__ = ["Mismatch", "Verification", "compare", "verify"]
