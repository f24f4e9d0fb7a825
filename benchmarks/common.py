"""What the benchmark scripts share: fresh-process runs, the machine's size, the README tables."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine_bytes() -> int:
    """This machine's physical memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def fresh_runs(command: list[str], repeats: int, timeout: int = 7200) -> list[dict[str, object]] | str:
    """Run ``command`` ``repeats`` times, each in a fresh process that prints one JSON object as its
    last line; the objects, or the first failure's last line of stderr."""
    runs = []
    for _ in range(repeats):
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            return (proc.stderr.strip().splitlines() or ["failed"])[-1]
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return runs


def write_block(name: str, body: str, readme: Path = HERE / "README.md") -> None:
    """Put ``body`` between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in ``readme``
    (appended at the end where the markers are missing)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = readme.read_text(encoding="utf-8")
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    readme.write_text(text, encoding="utf-8")
