"""The dashboard's state: the models it offers and its caches. Everything else lives in each call.

Models load on first use, once (a lock per name). Captures are cached per (model, text) and the
drawable maps per (model, text, view options), both in byte-bounded LRU caches, so every request
of every browser tab carries its own text and options and the server keeps no per-tab state.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from headmap.analysis.stats import HeadStats, collect_stats
from headmap.attribution.calibrated import Calibration, load_calibration
from headmap.capture import MapStore, stream
from headmap.capture.discovery import discover
from headmap.errors import HeadmapError
from headmap.models import BUNDLED, LoadedModel, load
from headmap.result import AttentionResult, LayerKey
from headmap.serve.cache import BoundedCache
from headmap.serve.display import DisplayCollector, DisplayMaps, ViewSpec, estimate_bytes, from_capture

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

T = TypeVar("T")

MAX_TOKENS = 4096
MAX_CELLS = 512
CACHE_BYTES = 1 << 30
#: Texts whose full capture (every layer and head, float32) fits this are captured whole and kept.
FULL_CAPTURE_BYTES = 256 << 20
#: Pictures' codes waiting to be fetched by the page (a 512 x 512 map is 512 KB).
BLOB_BYTES = 64 << 20
BLOB_ROUTE = "headmap/blob/"
DERIVED_ENTRIES = 32


@dataclass(frozen=True)
class ModelInfo:
    """What the controls need: the layers (slider positions) and heads of a model."""

    name: str
    keys: tuple[LayerKey, ...]
    num_heads: int


def check_model_names(names: Sequence[str]) -> tuple[str, ...]:
    """Bundled names, existing folders and ``.gguf`` files, without repeats; else one clear error."""
    out: list[str] = []
    for name in names:
        if name not in BUNDLED:
            path = Path(name).expanduser()
            if not (path.is_dir() or (path.is_file() and path.suffix == ".gguf")):
                raise HeadmapError(
                    f"--model {name}: not a bundled model ({', '.join(BUNDLED)}), a model folder or a .gguf file"
                )
        if name not in out:
            out.append(name)
    return tuple(out)


class Workbench:
    """Models and caches shared by every request; each method takes everything it needs."""

    def __init__(
        self,
        models: Sequence[str] = ("minilm",),
        *,
        max_tokens: int = MAX_TOKENS,
        max_cells: int = MAX_CELLS,
        cache_bytes: int = CACHE_BYTES,
        full_capture_bytes: int = FULL_CAPTURE_BYTES,
        trust_remote_code: bool = False,
        loader: Callable[..., LoadedModel] = load,
        load_options: Mapping[str, Any] | None = None,
        calibrations: Mapping[str, str | Path] | None = None,
    ) -> None:
        given = check_model_names(models)
        self.model_names = given + tuple(n for n in BUNDLED if n not in given)
        self.default_model = given[0] if given else self.model_names[0]
        self.max_tokens, self.max_cells, self.full_capture_bytes = max_tokens, max_cells, full_capture_bytes
        self._trust_remote_code, self._loader = trust_remote_code, loader
        self._load_options = dict(load_options or {})  # device, dtype... for every model (headmap.load)
        # AT2-style head weights per model name (`headmap calibrate`), for the calibrated method.
        self._calibrations = {name: Path(path) for name, path in (calibrations or {}).items()}
        self._models: BoundedCache[LoadedModel] = BoundedCache(len(self.model_names), lambda _: 1)
        # A third of the budget for whole captures, the rest for drawable maps.
        self.captures: BoundedCache[AttentionResult] = BoundedCache(
            cache_bytes // 3, lambda r: sum(layer.weights.nbytes for layer in r.layers)
        )
        self.displays: BoundedCache[DisplayMaps] = BoundedCache(
            cache_bytes - cache_bytes // 3, lambda d: d.budget
        )
        self.stats_cache: BoundedCache[HeadStats] = BoundedCache(64 << 20, lambda s: s.overview.nbytes + 4096)
        self.blobs: BoundedCache[bytes] = BoundedCache(BLOB_BYTES, len)
        # Explanations and RAG reports: small objects that cost many forwards, kept by count.
        self.derived: BoundedCache[object] = BoundedCache(DERIVED_ENTRIES, lambda _: 1)

    # -- models ----------------------------------------------------------------------------------
    def calibration(self, name: str) -> Calibration | None:
        """The head weights given for model ``name`` (checked against it once), or None."""
        path = self._calibrations.get(name)
        if path is None:
            return None
        return self.derive(("calibration", name, str(path)), lambda: load_calibration(path, self.model(name)))

    def model(self, name: str) -> LoadedModel:
        if name not in self.model_names:
            raise HeadmapError(f"unknown model {name!r}: this dashboard offers {', '.join(self.model_names)}")
        return self._models.get_or_compute(
            name, lambda: self._loader(name, trust_remote_code=self._trust_remote_code, **self._load_options)
        )

    def info(self, name: str) -> ModelInfo:
        arch = discover(self.model(name).model)
        keys = tuple(sorted(arch.sites, key=lambda k: k.sort_key))
        return ModelInfo(name, keys, arch.num_heads)

    # -- pictures' bytes -------------------------------------------------------------------------
    def publish(self, data: bytes) -> str:
        """Keep ``data`` for the page to fetch; its URL, relative to the page."""
        token = secrets.token_urlsafe(18)
        self.blobs.put(token, data)
        return BLOB_ROUTE + token

    def blob(self, token: str) -> bytes | None:
        return self.blobs.get(token)

    # -- text ------------------------------------------------------------------------------------
    def count_tokens(self, name: str, text: str) -> int:
        """Tokens of ``text`` for model ``name``; empty or too long texts raise a clear error."""
        if not isinstance(text, str) or not text.strip():
            raise HeadmapError("the text is empty: type or paste at least one word")
        # LoadedModel types its tokenizer as object (core stays free of transformers' types).
        tokenizer = cast("PreTrainedTokenizerBase", self.model(name).tokenizer)
        count = len(tokenizer(text)["input_ids"])
        if count > self.max_tokens:
            raise HeadmapError(
                f"the text has {count} tokens but this dashboard draws at most {self.max_tokens}: shorten it, "
                "start the dashboard with a larger --max-tokens, or use `headmap stats`, which streams any length"
            )
        return count

    # -- maps ------------------------------------------------------------------------------------
    def maps(self, name: str, text: str, spec: ViewSpec) -> DisplayMaps:
        """The drawable maps of ``text`` under ``spec``: cached, captured or streamed as needed."""
        tokens = self.count_tokens(name, text)
        return self.displays.get_or_compute(
            (name, text, spec), lambda: self._display(name, text, spec, tokens)
        )

    def _display(self, name: str, text: str, spec: ViewSpec, tokens: int) -> DisplayMaps:
        info = self.info(name)
        if estimate_bytes(len(info.keys) * info.num_heads, tokens) <= self.full_capture_bytes:
            return from_capture(self.capture(name, text), spec, self.max_cells)
        collector = DisplayCollector(spec, self.max_cells)
        stream(self.model(name), text, collector)
        return collector.maps(tokens)

    def capture(self, name: str, text: str) -> AttentionResult:
        """Every layer and head of ``text``, cached per (model, text)."""

        def run() -> AttentionResult:
            store = MapStore()
            stream(self.model(name), text, store)
            return store.results()[0]

        return self.captures.get_or_compute((name, text), run)

    def stats(self, name: str, text: str) -> HeadStats:
        """Per-head statistics of ``text`` (streamed), cached per (model, text)."""
        self.count_tokens(name, text)

        def run() -> HeadStats:
            stats = collect_stats(self.model(name), text)
            assert not isinstance(stats, list)  # one text in, one HeadStats out
            return stats

        return self.stats_cache.get_or_compute((name, text), run)

    def derive(self, key: tuple[object, ...], compute: Callable[[], T]) -> T:
        """A view's result for ``key`` (a RAG report, an explanation...), computed once and kept.

        Each view's keys start with its own name, so a key is only ever filled by one ``compute``
        and the cached value has the type that ``compute`` returns.
        """
        return cast(T, self.derived.get_or_compute(key, compute))
