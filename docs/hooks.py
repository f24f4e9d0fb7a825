"""MkDocs hook: the site's pages take their text from README.md and benchmarks/README.md.

A page line ``<!-- include: FILE -->`` is replaced by FILE (its first ``#`` title dropped), and
``<!-- include: FILE # Heading prefix -->`` by the body of the first section of FILE whose heading
starts with the prefix, up to the next heading of the same or a higher level. Headings inside are
moved so that the section's own level becomes the page's title (``#``). Options after ``|``, comma
separated: ``intro`` stops at the next heading of any level; ``nested`` places the section under a
``##`` heading the page writes itself (its subheadings become ``###``). The READMEs stay the one source: a heading renamed there
fails the build (``mkdocs build --strict``, tests/test_docs.py) instead of leaving a stale copy.

Links in the included text are written for the repository root; they are rewritten for the site
(every page sits at the top of docs/): ``docs/images/`` becomes ``images/``, the benchmark README
becomes ``benchmarks.md``, and a link to any other repository file keeps only its text, since that
file is not part of the site.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parent.parent
DIRECTIVE = re.compile(
    r"^<!-- include: (?P<file>[^#|]+?)(?: # (?P<heading>[^|]+?))?(?: \| (?P<mode>[a-z,]+))? -->$", re.M
)
HEADING = re.compile(r"^(#{1,6}) (.*)$")
FENCE = re.compile(r"^\s*(```|~~~)")
# [text](target) not preceded by "!" (images keep their own rule below)
LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)\)")
# A Sphinx role left in a rendered docstring, e.g. :class:<code>~headmap.capture.encoding.Encoded</code>
ROLE = re.compile(r":(?:class|func|meth|attr|data|mod|exc|obj):<code>(~?)([\w.]+)</code>")
SITE_PATHS = {"benchmarks/README.md": "benchmarks.md", "docs/README.md": "gallery.md"}


class IncludeError(PluginError):
    """An include directive names a file or heading that does not exist."""


def outside_fences(lines: list[str]) -> list[bool]:
    """For each line, whether it is Markdown text (True) or inside a fenced code block (False),
    since a bash comment such as ``# or build a wheel`` is not a heading."""
    flags, fenced = [], False
    for line in lines:
        if FENCE.match(line):
            flags.append(False)
            fenced = not fenced
        else:
            flags.append(not fenced)
    return flags


def section(text: str, prefix: str, intro: bool) -> tuple[list[str], int]:
    """The body lines of the first section whose heading starts with ``prefix``, and its level."""
    lines = text.splitlines()
    prose = outside_fences(lines)
    start: int | None = None
    level = 0
    for i, line in enumerate(lines):
        match = HEADING.match(line) if prose[i] else None
        if match is None:
            continue
        depth = len(match.group(1))
        if start is None:
            if match.group(2).startswith(prefix):
                start, level = i + 1, depth
        elif intro or depth <= level:
            return lines[start:i], level
    if start is None:
        raise IncludeError(f"no heading starting with {prefix!r}")
    return lines[start:], level


def lift(lines: list[str], level: int, title: int) -> list[str]:
    """Move the headings so that ``level`` (the section's own) becomes ``title``: with ``title`` 1 a
    ``##`` section's ``###`` become the page's ``##``."""
    prose = outside_fences(lines)
    out = []
    for line, is_prose in zip(lines, prose):
        match = HEADING.match(line) if is_prose else None
        if match:
            line = "#" * min(6, max(1, len(match.group(1)) - level + title)) + " " + match.group(2)
        out.append(line)
    return out


def site_link(match: re.Match[str]) -> str:
    """A repository-relative link rewritten for the site (see the module docstring)."""
    text, target = match.group("text"), match.group("target")
    if re.match(r"^(https?:|mailto:|#)", target):
        return match.group(0)
    path, _, anchor = target.partition("#")
    if path in SITE_PATHS:
        return f"[{text}]({SITE_PATHS[path]}{'#' + anchor if anchor else ''})"
    return text


def rewrite_links(markdown: str) -> str:
    """Image paths and links of the repository root, for a page at the top of docs/."""
    markdown = markdown.replace("](docs/images/", "](images/")
    return LINK.sub(site_link, markdown)


def include(match: re.Match[str]) -> str:
    """The text a directive stands for."""
    path = ROOT / match.group("file").strip()
    if not path.is_file():
        raise IncludeError(f"include: {path} does not exist")
    text = path.read_text(encoding="utf-8")
    modes = set((match.group("mode") or "").split(",")) - {""}
    if modes - {"intro", "nested"}:
        raise IncludeError(f"include: unknown option(s) {sorted(modes - {'intro', 'nested'})}")
    heading, intro = match.group("heading"), "intro" in modes
    if heading is None:
        lines, level = section(text, "", intro=False)  # the body under the file's first title
    else:
        try:
            lines, level = section(text, heading.strip(), intro)
        except IncludeError as error:
            raise IncludeError(f"include: {path.name}: {error}") from None
    title = 2 if "nested" in modes else 1
    return rewrite_links("\n".join(lift(lines, level, title)).strip("\n"))


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """MkDocs event: expand the include directives of a page."""
    return DIRECTIVE.sub(include, markdown)


def plain_role(match: re.Match[str]) -> str:
    """A Sphinx cross-reference role shown as code: the last component for ``~name``, as Sphinx does."""
    name = match.group(2)
    return f"<code>{name.rsplit('.', 1)[-1] if match.group(1) else name}</code>"


def on_page_content(html: str, **kwargs: Any) -> str:
    """MkDocs event: the docstrings are written for Sphinx; their roles become plain code here."""
    return ROLE.sub(plain_role, html)
