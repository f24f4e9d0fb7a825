"""Reading a corpus: a ``.txt`` file (one text per non-empty line), a ``.jsonl`` file (a ``text``
field per line) or a folder of ``.txt`` files (one text each).

Every text keeps where it came from (``file:line``), so that a malformed line, or a text the model
cannot take, is reported by its place in the corpus.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from headmap.capture.encoding import encode
from headmap.errors import HeadmapError
from headmap.tokens import Tokens

CORPUS_SUFFIXES = (".txt", ".jsonl")


@dataclass(frozen=True)
class CorpusText:
    """One text of a corpus, its position in the corpus and where it was read from."""

    index: int
    text: str
    origin: str  # "sentences.txt:18", "docs/a.txt", or "text 3" for texts given in Python

    @property
    def digest(self) -> str:
        """A short fingerprint of the text: resumed reports check that the corpus did not change."""
        return text_digest(self.text)


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def read_corpus(path: str | Path, max_texts: int | None = None) -> list[CorpusText]:
    """The texts of the corpus at ``path`` (see the module docstring), at most ``max_texts`` of them."""
    path = Path(path)
    if max_texts is not None and max_texts < 1:
        raise HeadmapError(f"--max-texts must be at least 1, not {max_texts}")
    if path.is_dir():
        texts = _read_folder(path, max_texts)
    elif not path.exists():
        raise HeadmapError(
            f"corpus {path} does not exist: give a .txt file, a .jsonl file or a folder of .txt files"
        )
    elif path.suffix.lower() == ".txt":
        texts = _read_lines(path, max_texts, _plain_line)
    elif path.suffix.lower() == ".jsonl":
        texts = _read_lines(path, max_texts, _json_line)
    else:
        raise HeadmapError(
            f"unknown corpus type {path.suffix or '(no extension)'!r} for {path}: "
            f"use a .txt file (one text per line), a .jsonl file (a 'text' field per line) or a folder"
        )
    if not texts:
        raise HeadmapError(f"corpus {path} holds no text: add at least one non-empty line or file")
    return texts


def corpus_from_texts(texts: Sequence[str], max_texts: int | None = None) -> list[CorpusText]:
    """Texts given in Python, checked like corpus lines."""
    if isinstance(texts, (str, bytes)):
        raise HeadmapError("texts must be a list of strings or a corpus path (pathlib.Path), not one string")
    picked = list(texts)[:max_texts] if max_texts is not None else list(texts)
    out = []
    for i, text in enumerate(picked):
        if not isinstance(text, str) or not text.strip():
            raise HeadmapError(
                f"text {i} is {'empty' if isinstance(text, str) else type(text).__name__}: "
                "every text must be a non-empty string"
            )
        out.append(CorpusText(i, text, f"text {i}"))
    if not out:
        raise HeadmapError("no texts given: pass at least one text")
    return out


def as_corpus(
    texts: Sequence[str] | Sequence[CorpusText] | str | Path, max_texts: int | None = None
) -> list[CorpusText]:
    """A list of texts, a corpus already read (:func:`read_corpus`), or a corpus path (a ``str``
    counts as a path only when it names one)."""
    given = list(texts) if not isinstance(texts, (str, Path)) else []
    read = [t for t in given if isinstance(t, CorpusText)]
    if read and len(read) == len(given):
        picked = read[:max_texts] if max_texts is not None else read
        if [t.index for t in picked] != list(range(len(picked))):
            raise HeadmapError("a corpus must be numbered 0, 1, ... in order: read it with read_corpus")
        return picked
    if isinstance(texts, Path) or (isinstance(texts, str) and len(texts) < 4096 and Path(texts).exists()):
        return read_corpus(texts, max_texts)
    if isinstance(texts, str):
        raise HeadmapError(
            f"texts must be a list of strings or a corpus path; {texts[:60]!r} is not a file or folder"
        )
    return corpus_from_texts(cast("Sequence[str]", texts), max_texts)  # checked there, text by text


def _plain_line(line: str, where: str) -> str | None:
    return line if line.strip() else None


def _json_line(line: str, where: str) -> str | None:
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise HeadmapError(
            f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); "
            'each line must be an object such as {"text": "..."}'
        ) from None
    if not isinstance(record, dict) or "text" not in record:
        raise HeadmapError(f'{where}: no "text" field; each line must be an object such as {{"text": "..."}}')
    text = record["text"]
    if not isinstance(text, str):
        raise HeadmapError(f'{where}: "text" is a {type(text).__name__}, not a string')
    if not text.strip():
        raise HeadmapError(f'{where}: "text" is empty; remove the line or give it a text')
    return text


def _read_lines(path: Path, max_texts: int | None, parse) -> list[CorpusText]:
    texts: list[CorpusText] = []
    try:
        with path.open(encoding="utf-8", newline=None) as handle:
            for number, raw in enumerate(handle, start=1):
                where = f"{path.name}:{number}"
                text = parse(raw.rstrip("\n"), where)
                if text is not None:
                    texts.append(CorpusText(len(texts), text, where))
                    if max_texts is not None and len(texts) >= max_texts:
                        break
    except UnicodeDecodeError as exc:
        line = _bad_line(path)
        raise HeadmapError(
            f"{path.name}:{line}: not UTF-8 text ({exc.reason}); save the corpus as UTF-8"
        ) from None
    except OSError as exc:
        raise HeadmapError(f"cannot read corpus {path}: {exc.strerror or exc}") from None
    return texts


def _bad_line(path: Path) -> int:
    """The line of the first byte that is not UTF-8 (a streaming decoder reports offsets per chunk)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return data[: exc.start].count(b"\n") + 1
    return 1


def _read_folder(folder: Path, max_texts: int | None) -> list[CorpusText]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".txt")
    if not files:
        raise HeadmapError(f"folder {folder} holds no .txt files: put one text per .txt file in it")
    texts: list[CorpusText] = []
    for path in files[:max_texts] if max_texts is not None else files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            line = path.read_bytes()[: exc.start].count(b"\n") + 1
            raise HeadmapError(
                f"{path.name}:{line}: not UTF-8 text ({exc.reason}); save it as UTF-8"
            ) from None
        except OSError as exc:
            raise HeadmapError(f"cannot read {path}: {exc.strerror or exc}") from None
        if not text.strip():
            raise HeadmapError(f"{path.name} is empty: remove it from the corpus folder or give it a text")
        texts.append(CorpusText(len(texts), text, path.name))
    return texts


__all__ = ["CORPUS_SUFFIXES", "CorpusText", "as_corpus", "corpus_from_texts", "read_corpus", "text_digest"]


def encode_text(tokenizer, text: CorpusText, limit: int | None) -> tuple[list[int], Tokens]:
    """A corpus text's ids and tokens as a capture encodes them (at most ``limit`` tokens, see
    :func:`headmap.capture.engine.max_tokens`); a text the model cannot take fails naming its place."""
    try:
        return encode(tokenizer, text.text, limit)
    except HeadmapError as exc:
        raise HeadmapError(f"{text.origin}: {exc}") from None
