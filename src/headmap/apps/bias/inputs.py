"""The probe's inputs: a template with a ``{name}`` slot, an evidence phrase, and two lists of names.

**Names files** (``.txt``, UTF-8): one name per line; blank lines and lines starting with ``#``
(a header stating the list's source and licence, say) are skipped; surrounding spaces are
stripped. A name may be several words or tokens. A name repeated in one list, or found in both,
is refused: a pair of equal names compares nothing.

**Template**: any text with the placeholder ``{name}`` (one or more times; every occurrence gets
the name). Only that exact placeholder is replaced, so other braces stay as they are. The
**evidence** is a phrase that occurs exactly once in the template, outside the placeholders: the
part of the prompt the decision should rest on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from headmap.errors import HeadmapError

PLACEHOLDER = "{name}"
NAMES_EXTENSIONS = (".txt",)


@dataclass(frozen=True)
class Group:
    """One group of names: a ``label`` ("A", "female", ...) and its names (untrusted: escape before HTML)."""

    label: str
    names: tuple[str, ...]


@dataclass(frozen=True)
class Template:
    """A checked template: its text, and the evidence phrase's character span in it."""

    text: str
    evidence: str
    evidence_start: int

    def fill(self, name: str) -> tuple[str, list[tuple[int, int]], tuple[int, int]]:
        """The template with ``name`` in every slot, the name's character spans and the evidence's span.

        The evidence lies inside one piece between slots (it cannot overlap a slot), so its span moves
        with the lengths of the names before it.
        """
        text, spans, evidence = "", [], (0, 0)
        template_at = 0  # where the current piece starts in the template
        for i, piece in enumerate(self.text.split(PLACEHOLDER)):
            if i:
                spans.append((len(text), len(text) + len(name)))
                text += name
            offset = self.evidence_start - template_at
            if offset >= 0 and offset + len(self.evidence) <= len(piece):
                evidence = (len(text) + offset, len(text) + offset + len(self.evidence))
            text += piece
            template_at += len(piece) + len(PLACEHOLDER)
        return text, spans, evidence


def check_template(template: str, evidence: str) -> Template:
    """The template and evidence checked (see the module docstring), with the evidence located."""
    if not isinstance(template, str) or PLACEHOLDER not in template:
        raise HeadmapError(
            f"the template has no {PLACEHOLDER} slot: write it where the name goes, e.g. "
            f'"{PLACEHOLDER} has ten years of experience. Hire? Answer:"'
        )
    if not isinstance(evidence, str) or not evidence.strip():
        raise HeadmapError(
            "the evidence phrase is empty: give the part of the template the decision should rest "
            "on (it must occur in the template exactly once)"
        )
    if PLACEHOLDER in evidence:
        raise HeadmapError(
            f"the evidence phrase contains {PLACEHOLDER}: the evidence must be template text, not the name"
        )
    count = template.count(evidence)
    if count != 1:
        where = "does not occur" if count == 0 else f"occurs {count} times"
        raise HeadmapError(
            f"the evidence phrase {evidence!r} {where} in the template: give a phrase copied from "
            "the template that occurs there exactly once"
        )
    start = template.index(evidence)
    for slot in _slots(template):
        if slot < start + len(evidence) and start < slot + len(PLACEHOLDER):
            raise HeadmapError(
                f"the evidence phrase {evidence!r} overlaps the {PLACEHOLDER} slot: choose a phrase "
                "that leaves the name out"
            )
    return Template(template, evidence, start)


def _slots(template: str) -> list[int]:
    out, position = [], template.find(PLACEHOLDER)
    while position >= 0:
        out.append(position)
        position = template.find(PLACEHOLDER, position + len(PLACEHOLDER))
    return out


def read_names(path: str | Path) -> tuple[str, ...]:
    """The names of a ``.txt`` file (one per line; ``#`` comments and blank lines skipped)."""
    path = Path(path)
    if path.suffix.lower() not in NAMES_EXTENSIONS:
        raise HeadmapError(f"cannot read names from {path}: give a .txt file with one name per line")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise HeadmapError(f"names file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HeadmapError(f"cannot read names file {path}: {exc}") from None
    names: list[str] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        if name in seen:
            raise HeadmapError(
                f"{path}, line {number}: the name {name!r} is already on line {seen[name]}: "
                "list each name once"
            )
        seen[name] = number
        names.append(name)
    if not names:
        raise HeadmapError(f"names file {path} holds no name: write one name per line")
    return tuple(names)


def as_groups(groups: Mapping[str, Sequence[str] | str | Path]) -> tuple[Group, Group]:
    """Exactly two groups, in the mapping's order (A first): lists of names, or ``.txt`` paths to read."""
    if isinstance(groups, (str, bytes)) or not isinstance(groups, Mapping):
        raise HeadmapError(
            'groups must map two labels to their names, e.g. {"A": ["Anna", ...], "B": "names_b.txt"}'
        )
    if len(groups) != 2:
        raise HeadmapError(f"the probe compares exactly two groups of names, not {len(groups)}: give two")
    out = []
    for label, names in groups.items():
        label = str(label).strip()
        if not label:
            raise HeadmapError("a group label is empty: name each group, e.g. A=names_a.txt")
        if isinstance(names, Path) or (
            isinstance(names, str) and Path(names).suffix.lower() in NAMES_EXTENSIONS
        ):
            items = read_names(names)
        elif isinstance(names, str):
            raise HeadmapError(
                f"group {label!r}: give a list of names or a .txt file, not the string {names!r}"
            )
        else:
            items = _checked_names(label, names)
        out.append(Group(label, items))
    if out[0].label == out[1].label:
        raise HeadmapError(f"both groups are labelled {out[0].label!r}: give each group its own label")
    shared = sorted(set(out[0].names) & set(out[1].names))
    if shared:
        raise HeadmapError(
            f"the name(s) {', '.join(map(repr, shared[:5]))} are in both groups: "
            "each name belongs to one group"
        )
    return out[0], out[1]


def _checked_names(label: str, names: Sequence[str]) -> tuple[str, ...]:
    items = []
    for i, name in enumerate(names, start=1):
        if not isinstance(name, str) or not name.strip():
            raise HeadmapError(f"group {label!r}, name {i} is empty or not a text")
        if "\n" in name or "\r" in name:
            raise HeadmapError(f"group {label!r}, name {i} spans several lines: give one name per entry")
        items.append(name.strip())
    if not items:
        raise HeadmapError(f"group {label!r} has no names: give at least one")
    if len(set(items)) != len(items):
        twice = next(n for n in items if items.count(n) > 1)
        raise HeadmapError(f"group {label!r} lists {twice!r} twice: list each name once")
    return tuple(items)
