"""The retrieved chunks of a RAG prompt: read from ``.jsonl`` or ``.txt`` files, or given in Python.

``.jsonl``: one JSON object per line with a ``text`` string and an optional ``id`` (string or
number); blank lines are skipped. ``.txt``: chunks separated by one or more blank lines, each
chunk's lines kept as written. A chunk without an id gets its 1-based position (``"1"``, ``"2"``,
...). Every problem names the file and, for ``.jsonl``, the line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from headmap.errors import HeadmapError

CHUNK_EXTENSIONS = (".jsonl", ".txt")


@dataclass(frozen=True)
class Chunk:
    """One retrieved passage: a display ``id`` and its ``text`` (untrusted: escape before HTML)."""

    id: str
    text: str


def read_chunks(path: str | Path) -> list[Chunk]:
    """Chunks from a ``.jsonl`` or ``.txt`` file (see the module docstring for the formats)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in CHUNK_EXTENSIONS:
        raise HeadmapError(
            f'cannot read chunks from {path}: use a .jsonl file (one {{"text": ...}} per line) '
            "or a .txt file (chunks separated by blank lines)"
        )
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HeadmapError(f"chunk file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HeadmapError(f"cannot read chunk file {path}: {exc}") from None
    chunks = _parse_jsonl(content, path) if suffix == ".jsonl" else _parse_txt(content)
    return as_chunks(chunks, source=str(path))


def _parse_jsonl(content: str, path: Path) -> list[Chunk]:
    chunks = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HeadmapError(
                f"{where}: not valid JSON ({exc.msg}): write one object such as "
                '{"id": "a", "text": "..."} per line'
            ) from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise HeadmapError(f'{where}: each line needs an object with a "text" string')
        ident = record.get("id")
        if ident is not None and (isinstance(ident, bool) or not isinstance(ident, (str, int))):
            raise HeadmapError(f'{where}: "id" must be a string or a number')
        if not record["text"].strip():
            raise HeadmapError(f"{where}: the chunk text is empty")
        chunks.append(Chunk(id="" if ident is None else str(ident), text=record["text"]))
    return chunks


def _parse_txt(content: str) -> list[Chunk]:
    blocks = re.split(r"\n[ \t]*\n", content.replace("\r\n", "\n"))
    return [Chunk(id="", text=block.strip("\n")) for block in blocks if block.strip()]


def as_chunks(
    chunks: Sequence[str | Chunk | Mapping[str, object]], source: str = "the chunks"
) -> list[Chunk]:
    """Normalize strings, :class:`Chunk` objects or ``{"text", "id"}`` mappings to chunks with ids.

    Missing ids become the 1-based position; ids must be unique so that results can name chunks.
    """
    if isinstance(chunks, (str, bytes)):
        raise HeadmapError("chunks must be a list of texts, not one string: split the context into chunks")
    out: list[Chunk] = []
    for i, chunk in enumerate(chunks):
        if isinstance(chunk, Chunk):
            item = chunk
        elif isinstance(chunk, str):
            item = Chunk("", chunk)
        elif isinstance(chunk, Mapping) and isinstance(chunk.get("text"), str):
            ident = chunk.get("id")
            item = Chunk("" if ident is None else str(ident), str(chunk["text"]))
        else:
            raise HeadmapError(
                f'chunk {i + 1} of {source} is not a text: give strings or {{"text": ...}} objects'
            )
        if not item.text.strip():
            raise HeadmapError(f"chunk {i + 1} of {source} is empty")
        out.append(Chunk(item.id or str(i + 1), item.text))
    if not out:
        raise HeadmapError(f"{source} holds no chunk: give at least one non-empty chunk")
    seen: set[str] = set()
    for chunk in out:
        if chunk.id in seen:
            raise HeadmapError(f"chunk id {chunk.id!r} appears twice in {source}: give each chunk its own id")
        seen.add(chunk.id)
    return out
