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
from headmap.capture.engine import max_tokens as position_limit
from headmap.errors import HeadmapError
from headmap.models import BUNDLED, SHIPPED, LoadedModel, load
from headmap.result import AttentionResult, LayerKey
from headmap.serve.cache import BoundedCache
from headmap.serve.display import DisplayCollector, DisplayMaps, ViewSpec, estimate_bytes, from_capture
from headmap.serve.inputs import MAX_UPLOAD_BYTES, Item, Modality, clip_rate, make_item, modality_of

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

T = TypeVar("T")

MAX_TOKENS = 4096
#: Longest text (in characters) a request may carry: tokenizing is itself work, so it is bounded first.
MAX_TEXT_CHARS = 100_000
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
    """What the controls need: the layers (slider positions) and heads of a model, and the longest
    text its position table takes (None: no such table, e.g. rotary positions), and what it reads."""

    name: str
    keys: tuple[LayerKey, ...]
    num_heads: int
    position_limit: int | None = None
    modality: Modality = Modality.TEXT


def check_model_names(names: Sequence[str]) -> tuple[str, ...]:
    """Bundled and shipped names, existing folders and ``.gguf`` files, without repeats; else one clear error."""
    out: list[str] = []
    for name in names:
        if name not in BUNDLED and name not in SHIPPED:
            path = Path(name).expanduser()
            if not (path.is_dir() or (path.is_file() and path.suffix == ".gguf")):
                raise HeadmapError(
                    f"--model {name}: not a bundled model ({', '.join([*BUNDLED, *SHIPPED])}), "
                    "a model folder or a .gguf file"
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
        max_text_chars: int = MAX_TEXT_CHARS,
        max_cells: int = MAX_CELLS,
        cache_bytes: int = CACHE_BYTES,
        full_capture_bytes: int = FULL_CAPTURE_BYTES,
        trust_remote_code: bool = False,
        loader: Callable[..., LoadedModel] = load,
        load_options: Mapping[str, Any] | None = None,
        calibrations: Mapping[str, str | Path] | None = None,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
    ) -> None:
        given = check_model_names(models)
        self.model_names = given + tuple(n for n in (*BUNDLED, *SHIPPED) if n not in given)
        self.default_model = given[0] if given else self.model_names[0]
        self.max_tokens, self.max_cells, self.full_capture_bytes = max_tokens, max_cells, full_capture_bytes
        self.max_text_chars = max_text_chars
        self.max_upload_bytes = max_upload_bytes
        self._trust_remote_code, self._loader = trust_remote_code, loader
        self._load_options = dict(load_options or {})  # device, dtype... for every model (headmap.load)
        # AT2-style head weights per model name (`headmap calibrate`), for the calibrated method.
        self._calibrations = {name: Path(path) for name, path in (calibrations or {}).items()}
        self._models: BoundedCache[LoadedModel] = BoundedCache(len(self.model_names), lambda _: 1)
        # The whole budget is cache_bytes: an eighth each (at most 64 MB) for statistics and for the
        # pictures' codes waiting to be fetched, then a third of the rest for whole captures and the
        # remainder for drawable maps.
        side = min(BLOB_BYTES, cache_bytes // 8)
        rest = cache_bytes - 2 * side
        self.captures: BoundedCache[AttentionResult] = BoundedCache(
            rest // 3, lambda r: sum(layer.weights.nbytes for layer in r.layers)
        )
        self.displays: BoundedCache[DisplayMaps] = BoundedCache(rest - rest // 3, lambda d: d.budget)
        self.stats_cache: BoundedCache[HeadStats] = BoundedCache(side, lambda s: s.overview.nbytes + 4096)
        self.blobs: BoundedCache[bytes] = BoundedCache(side, len)
        # Explanations and RAG reports: small objects that cost many forwards, kept by count.
        self.derived: BoundedCache[object] = BoundedCache(DERIVED_ENTRIES, lambda _: 1)

    def cached_bytes(self) -> int:
        """Bytes held by the byte-bounded caches (at most the ``cache_bytes`` given)."""
        return sum(c.nbytes for c in (self.captures, self.displays, self.stats_cache, self.blobs))

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
        loaded = self.model(name)
        arch = discover(loaded.model)
        keys = tuple(sorted(arch.sites, key=lambda k: k.sort_key))
        modality = modality_of(arch, getattr(loaded.model, "config", None))
        return ModelInfo(name, keys, arch.num_heads, position_limit(loaded, arch), modality)

    def item(
        self, name: str, text: str, image: object = None, audio: object = None, resample: bool = False
    ) -> Item:
        """The input a request for model ``name`` takes: the text, or the image or clip it uploaded
        (a clip resampled to the model's rate when ``resample``); one clear line when it is missing."""
        modality = self.info(name).modality
        expected = int(getattr(self.model(name).processor, "sampling_rate", 16000))
        rate = expected if resample and modality is Modality.AUDIO else None
        item = make_item(modality, name, self.check_text(text), image, audio, rate, self.max_upload_bytes)
        if modality is Modality.AUDIO and rate is None and item.path is not None:
            found = clip_rate(item.path)
            if found != expected:
                raise HeadmapError(
                    f"{item.name} is at {found} Hz but {name} takes {expected} Hz: tick "
                    f"'resample the clip to the model's rate', or upload a clip at {expected} Hz"
                )
        return item

    # -- pictures' bytes -------------------------------------------------------------------------
    def publish(self, data: bytes) -> str:
        """Keep ``data`` for the page to fetch; its URL, relative to the page."""
        token = secrets.token_urlsafe(18)
        self.blobs.put(token, data)
        return BLOB_ROUTE + token

    def blob(self, token: str) -> bytes | None:
        return self.blobs.get(token)

    # -- text ------------------------------------------------------------------------------------
    def check_text(self, text: str, what: str = "text") -> str:
        """``text`` if it is a string within ``max_text_chars``; else one clear error."""
        if not isinstance(text, str):
            raise HeadmapError(f"the {what} must be a string, not {type(text).__name__}")
        if len(text) > self.max_text_chars:
            raise HeadmapError(
                f"the {what} has {len(text)} characters but this server takes at most {self.max_text_chars}: "
                "shorten it (the server's limit is --max-text-chars)"
            )
        return text

    def count_tokens(self, name: str, text: str) -> int:
        """Tokens of ``text`` for model ``name``; empty or too long texts raise a clear error.

        Too long for the model's own position table (MiniLM: 512), the fix is a shorter text; too
        long only for this server's ``max_tokens``, a larger ``--max-tokens`` would also do.
        """
        self.check_text(text)
        modality = self.info(name).modality
        if modality is not Modality.TEXT:
            raise HeadmapError(
                f"{name} takes {modality.noun}, not text: draw it in the page (upload the file) "
                f"or with `headmap render -m {name} {modality.arguments}`"
            )
        if not text.strip():
            raise HeadmapError("the text is empty: type or paste at least one word")
        # LoadedModel types its tokenizer as object (core stays free of transformers' types).
        tokenizer = cast("PreTrainedTokenizerBase", self.model(name).tokenizer)
        count = len(tokenizer(text)["input_ids"])
        limit = self.info(name).position_limit
        if limit is not None and count > limit:
            raise HeadmapError(
                f"the text has {count} tokens but {name} reads at most {limit} (its position limit): "
                "shorten the text"
            )
        if count > self.max_tokens:
            raise HeadmapError(
                f"the text has {count} tokens but this dashboard draws at most {self.max_tokens}: shorten it, "
                "start the dashboard with a larger --max-tokens, or use `headmap stats`, which streams any length"
            )
        return count

    # -- maps ------------------------------------------------------------------------------------
    def maps(self, name: str, text: str | Item, spec: ViewSpec) -> DisplayMaps:
        """The drawable maps of ``text`` (or an uploaded image or clip) under ``spec``: cached, captured
        or streamed as needed."""
        if isinstance(text, Item):
            if text.modality is not Modality.TEXT:
                media = text
                return self.displays.get_or_compute(
                    (name, media.key, spec),
                    lambda: from_capture(self.capture(name, media), spec, self.max_cells),
                )
            text = text.text
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

    def capture(self, name: str, text: str | Item) -> AttentionResult:
        """Every layer and head of ``text`` (or an uploaded image or clip), cached per (model, input)."""
        item = text if isinstance(text, Item) else Item(Modality.TEXT, text)

        def run() -> AttentionResult:
            store = MapStore()
            stream(self.model(name), item.capture_input(), store, target=item.target())  # type: ignore[arg-type]  # stream takes clips too
            return store.results()[0]

        return self.captures.get_or_compute((name, *item.key), run)

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
