"""Finished partials on disk, so that an interrupted corpus report loses nothing and a rerun goes on.

Each finished group of texts is written at once to ``<folder>/<kind>-<first>-<last>.safetensors``
(written to a temporary name, then renamed, so a file is either complete or absent) with the
report's spec, the texts' digests and, for importance, the loss in its metadata. Reading them back
checks all three: a folder filled by another model, other settings or a changed corpus is an error
that names the fix, never a silent mix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from headmap.analysis.corpus import CorpusText
from headmap.analysis.partials import Partial, ReportSpec
from headmap.errors import HeadmapError

FORMAT = "headmap-partial-1"
KINDS = ("stats", "importance")


class PartialStore:
    """The partials of one report in ``folder`` (created when first written)."""

    def __init__(self, folder: str | Path, spec: ReportSpec, loss: str | None = None) -> None:
        self.folder = Path(folder)
        self.spec = spec
        self.loss = loss
        if self.folder.exists() and not self.folder.is_dir():
            raise HeadmapError(f"cannot keep partial results in {self.folder}: it is a file, not a folder")

    def _metadata(self, partial: Partial) -> dict[str, str]:
        meta = {
            "format": FORMAT,
            "kind": partial.kind,
            "spec": self.spec.to_json(),
            "digests": json.dumps(partial.digests),
            "notes": json.dumps(partial.notes),
        }
        if partial.kind == "importance":
            meta["loss"] = self.loss or ""
        return meta

    def write(self, partial: Partial) -> Path:
        """Write ``partial`` atomically; returns its path."""
        from safetensors.numpy import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        first, last = int(partial.indices.min()), int(partial.indices.max())
        path = self.folder / f"{partial.kind}-{first:07d}-{last:07d}.safetensors"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            save_file(partial.arrays(), str(tmp), metadata=self._metadata(partial))
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise HeadmapError(
                f"cannot write partial results to {self.folder}: {exc.strerror or exc}"
            ) from None
        return path

    def load(self, kind: str, corpus: Sequence[CorpusText]) -> list[Partial]:
        """The usable partials of ``kind`` for ``corpus``: checked, non-overlapping, inside the corpus.

        A file whose texts reach past the corpus (a smaller ``max_texts``) or overlap a file already
        taken is left aside; its texts are simply computed again.
        """
        if not self.folder.is_dir():
            return []
        taken: list[Partial] = []
        seen: set[int] = set()
        for path in sorted(self.folder.glob(f"{kind}-*.safetensors")):
            partial = self._read(path, kind)
            indices = [int(i) for i in partial.indices]
            if max(indices) >= len(corpus) or seen.intersection(indices):
                continue
            for index, digest in zip(indices, partial.digests):
                if corpus[index].digest != digest:
                    raise HeadmapError(
                        f"{self.folder} holds results of a different corpus ({corpus[index].origin} changed): "
                        "delete that folder, or choose another output folder, to start over"
                    )
            seen.update(indices)
            taken.append(partial)
        return taken

    def _read(self, path: Path, kind: str) -> Partial:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="np") as handle:
                meta = handle.metadata() or {}
                arrays = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
            digests = json.loads(meta.get("digests", "null"))
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same fix for the user
            raise HeadmapError(
                f"partial result {path} is unreadable ({type(exc).__name__}): delete it and rerun"
            ) from None
        if meta.get("format") != FORMAT or meta.get("kind") != kind or not isinstance(digests, list):
            raise HeadmapError(f"{path} is not a headmap partial result: remove it from {self.folder}")
        if meta.get("spec") != self.spec.to_json() or (
            kind == "importance" and meta.get("loss") != (self.loss or "")
        ):
            raise HeadmapError(
                f"{self.folder} holds results of another model or other settings ({_difference(meta, self)}): "
                "delete that folder, or choose another output folder, to start over"
            )
        if "indices" not in arrays or len(arrays["indices"]) != len(digests) or not len(digests):
            raise HeadmapError(f"partial result {path} is inconsistent: delete it and rerun")
        notes = json.loads(meta.get("notes", "[]"))  # partials written before notes were kept have none
        return Partial.from_arrays(
            arrays, digests, [str(n) for n in notes] if isinstance(notes, list) else []
        )


def _difference(meta: dict[str, str], store: PartialStore) -> str:
    try:
        theirs = ReportSpec.from_json(meta["spec"])
    except (KeyError, ValueError, TypeError):
        return "unreadable settings"
    mine = store.spec
    for name in ("model", "layers", "heads", "stats", "diversity"):
        if getattr(theirs, name) != getattr(mine, name):
            return f"{name}: {_short(getattr(theirs, name))} there, {_short(getattr(mine, name))} now"
    return f"loss: {meta.get('loss') or 'none'} there, {store.loss or 'none'} now"


def _short(value: object) -> str:
    if isinstance(value, tuple) and len(value) > 4:
        return f"{value[0]}..{value[-1]} ({len(value)})"
    return str(value)


def kept_indices(partials: Sequence[Partial]) -> set[int]:
    return {int(i) for p in partials for i in np.asarray(p.indices)}


__all__ = ["KINDS", "PartialStore", "kept_indices"]
