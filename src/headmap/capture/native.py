"""The compiled fused-statistics kernel (``kernels/fused_stats.cpp``): built once, then loaded.

The pure-torch fused kernel (:mod:`headmap.capture.fused`) materializes each block's scores in
memory and reads them several times; on a CPU the memory traffic, not the arithmetic, is what it
pays for. This kernel works in tiles that stay in cache (flash attention's scheme) and reduces the
statistics' sums from the tile while it is hot. It is compiled with torch's own toolchain
(``torch.utils.cpp_extension``) on first use, into headmap's cache folder, and uses torch's BLAS
entry point and torch's vectorized ``exp`` (the one ``torch.exp`` uses), so its numbers agree with
the pure-torch path to float32 rounding (tested).

It is built for the first text (or packed batch) of 1,024 tokens or more (compiling takes about a
minute, once per machine and torch version), then serves texts of every length, on CPUs where torch
runs AVX2 or AVX-512 code, for every self-attention layer without a position bias: causal and
sliding-window flags, mask tensors (padding, windows, packed boundaries), softcaps. Without a C++ compiler, or with ``HEADMAP_NATIVE=0``, headmap
keeps the pure-torch kernel, with the same results.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from headmap.capture.fused_rows import FusedRows
from headmap.capture.moments import PositionMoments, RowMoments
from headmap.capture.tap import AttentionCall
from headmap.models.cache import cache_root

#: Texts shorter than this take the pure-torch kernel: there the compile would not pay off.
MIN_TOKENS = 1024
_LOWEST = torch.finfo(torch.float32).min
SOURCE = Path(__file__).with_name("kernels") / "fused_stats.cpp"
#: The head-distance kernel (Jensen-Shannon of every pair of heads), compiled into the same module.
JS_SOURCE = Path(__file__).with_name("kernels") / "js_pairs.cpp"
_FLAGS = {
    "AVX512": [
        "-DCPU_CAPABILITY=AVX512",
        "-DCPU_CAPABILITY_AVX512",
        "-mavx512f",
        "-mavx512bw",
        "-mavx512vl",
        "-mavx512dq",
        "-mfma",
    ],
    "AVX2": ["-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2", "-mavx2", "-mfma"],
}

log = logging.getLogger("headmap.native")
_lock = threading.Lock()
_state: dict[str, object] = {}


def capability() -> str | None:
    """torch's vector instruction set on this CPU, if the kernel can be built for it."""
    try:
        found = torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        return None
    return found if found in _FLAGS else None


def unavailable() -> str | None:
    """Why the compiled kernel cannot be used here (None when it can, or may still be built)."""
    if os.environ.get("HEADMAP_NATIVE", "1") in ("0", "false", "False", "no"):
        return "HEADMAP_NATIVE=0"
    if capability() is None:
        return "torch runs neither AVX2 nor AVX-512 code on this CPU"
    failed = _state.get("error")
    return str(failed) if failed else None


def module() -> ModuleType | None:
    """The compiled kernel, building it on first use (thread-safe); None if it cannot be had."""
    if unavailable():
        return None
    with _lock:
        if "module" in _state:
            return _state["module"]  # type: ignore[return-value]  # only ever set to a built module
        try:
            _state["module"] = _build()
        except Exception as exc:  # noqa: BLE001 - no compiler, a failed build: keep the torch kernel
            _state["error"] = (
                f"the compiled kernel could not be built ({type(exc).__name__}: {str(exc)[:200]})"
            )
            log.warning("headmap: %s; using the pure-torch kernel", _state["error"])
            return None
        return _state["module"]  # type: ignore[return-value]  # only ever set to a built module


def prepare(n_tokens: int) -> None:
    """Build the kernel (once per machine, about a minute) for work that pays for it: texts of
    :data:`MIN_TOKENS` tokens or more in all. Runs over a corpus call it before their first forward,
    so that every group takes the same path."""
    if n_tokens >= MIN_TOKENS:
        module()


def _flags() -> list[str]:
    return ["-O3", *_FLAGS[capability() or ""]]


def _folder() -> Path:
    """The build folder of these sources, these flags and this torch (so a change rebuilds)."""
    key = hashlib.sha256(
        SOURCE.read_bytes()
        + JS_SOURCE.read_bytes()
        + " ".join(_flags()).encode()
        + torch.__version__.encode()
    ).hexdigest()[:12]
    return cache_root() / "kernels" / f"headmap_fused_{key}"


def built() -> bool:
    """Whether the kernel is loaded in this process or already compiled in the cache folder."""
    if "module" in _state:
        return True
    if unavailable():
        return False
    if "built" not in _state:
        _state["built"] = any(_folder().glob("*.so"))
    return bool(_state["built"])


def _build() -> ModuleType:
    from torch.utils.cpp_extension import load

    flags = _flags()
    folder = _folder()
    name = folder.name
    folder.mkdir(parents=True, exist_ok=True)
    if not any(folder.glob("*.so")):
        print("headmap: compiling the fused statistics kernel once (about a minute)...", file=sys.stderr)
    # torch's builder runs `ninja` from PATH; a virtual environment's own copy counts too.
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    built: ModuleType = load(
        name=name,
        sources=[str(SOURCE), str(JS_SOURCE)],
        extra_cflags=flags,
        build_directory=str(folder),
        verbose=False,
    )
    return built


def refusal(call: AttentionCall) -> str | None:
    """Why the compiled kernel cannot serve this layer call (None when it can): it serves every
    self-attention call on a CPU without a position bias (causal and sliding-window flags, mask
    tensors, softcaps, packed texts), once built; texts of :data:`MIN_TOKENS` and more pay for
    building it, and any text is served once it is built."""
    q, k = call.query, call.key
    if q is None or k is None:
        return "the model computes its weights itself"
    if q.device.type != "cpu":
        return f"the compiled kernel runs on a CPU, and this layer runs on {q.device.type}"
    if call.position_bias is not None:
        return "the layer adds a position bias (T5-style), which the compiled kernel does not take"
    if q.shape[2] != k.shape[2]:
        return (
            "cross-attention (queries and keys of different texts), which the compiled kernel does not take"
        )
    missing = unavailable()
    if missing is not None:
        return f"the compiled kernel is unavailable ({missing})"
    if q.shape[2] < MIN_TOKENS and not built():
        return (
            f"the compiled kernel is not built yet, and a text under {MIN_TOKENS:,} tokens does not pay "
            "for its one-minute build"
        )
    return None


def eligible(call: AttentionCall) -> bool:
    """Whether this layer call can take the compiled kernel (see :func:`refusal`)."""
    return refusal(call) is None


@dataclass(frozen=True)
class KernelRun:
    """One batch element through the compiled kernel: ``out`` ``[query, head, dim]`` (what the model
    receives), ``sums`` ``[head, query, 10]`` (the per-row sums, see the kernel's header) and, where
    asked, ``maps`` ``[head, query, width]``: each row's weights over its text's keys, first key first."""

    out: torch.Tensor
    sums: torch.Tensor
    maps: torch.Tensor | None = None


@dataclass(frozen=True)
class ElementLayout:
    """Where the texts of one batch element lie, in the kernel's terms (the same for every layer of a
    forward, so built once): ``track`` ``[query, 4]`` the key of each row's first token, itself, the
    token before and the one after (-1: none); ``key_lo`` / ``key_hi`` ``[query]`` the keys each row
    may see (its own text in a packed batch, all keys otherwise); ``special`` the special keys."""

    track: torch.Tensor
    key_lo: torch.Tensor
    key_hi: torch.Tensor
    special: torch.Tensor

    @classmethod
    def of(cls, texts: Sequence[FusedRows], n_queries: int, n_keys: int, packed: bool) -> ElementLayout:
        """The layout of ``texts`` (each a contiguous run of positions of one self-attention element)."""
        return cls.of_runs([a.keys for a in texts], [a.special for a in texts], n_queries, n_keys, packed)

    @classmethod
    def of_runs(
        cls,
        runs: Sequence[torch.Tensor],
        specials: Sequence[torch.Tensor],
        n_queries: int,
        n_keys: int,
        packed: bool,
    ) -> ElementLayout:
        """The layout of texts at positions ``runs`` (each contiguous), ``specials`` the text indices of
        their special tokens (empty tensors where nothing is asked)."""
        track = torch.full((n_queries, 4), -1, dtype=torch.long)
        key_lo = torch.zeros(n_queries, dtype=torch.long)
        key_hi = torch.full((n_queries,), n_keys, dtype=torch.long)
        found = [torch.zeros(0, dtype=torch.long)]
        for positions, special in zip(runs, specials, strict=True):
            keys = positions.cpu()
            track[keys, 0] = keys[0]
            track[keys, 1] = keys  # the query token itself (one text on both sides)
            track[keys[1:], 2] = keys[:-1]
            track[keys[:-1], 3] = keys[1:]
            if packed:
                key_lo[keys], key_hi[keys] = int(keys[0]), int(keys[-1]) + 1
            found.append(keys[special.cpu()])
        return cls(track, key_lo, key_hi, torch.cat(found))


def run_element(
    call: AttentionCall, b: int, layout: ElementLayout, kernel: ModuleType, width: int = 0
) -> KernelRun:
    """Batch element ``b`` through the compiled kernel, its texts placed by ``layout``. ``width``: also
    return each row's weights over its first ``width`` keys (from ``layout.key_lo``)."""
    q, k, v = call.query, call.key, call.value
    assert q is not None and k is not None and v is not None
    mask = torch.zeros(0)
    if call.mask is not None:
        picked = call.mask[b if call.mask.shape[0] > 1 else 0]  # [1 or heads, query, key]
        # A boolean mask is read in place (a long text's N x N booleans are never widened to floats).
        mask = picked if picked.dtype == torch.bool else picked.float().clamp(min=_LOWEST)
    maps = torch.zeros(q.shape[1], q.shape[2], width) if width else torch.zeros(0)
    out, sums = kernel.fused_stats(
        (q[b].float() * call.scaling).contiguous(),
        k[b].float().transpose(1, 2).contiguous(),
        v[b].float().contiguous(),
        bool(call.is_causal),
        int(call.sliding_window or -1),
        layout.track,
        layout.special,
        layout.key_lo,
        layout.key_hi,
        mask,
        float(call.softcap or 0.0),
        maps,
    )
    return KernelRun(out, sums, maps if width else None)


#: A kernel that runs one batch element in this module's terms: ``(call, b, layout, width) -> KernelRun``
#: (:func:`runner` for the compiled kernel, :func:`headmap.capture.triton_stats.run_element` on a GPU).
Runner = Callable[[AttentionCall, int, ElementLayout, int], KernelRun]


def runner(kernel: ModuleType) -> Runner:
    """The compiled ``kernel`` as a :data:`Runner`."""

    def run(call: AttentionCall, b: int, layout: ElementLayout, width: int = 0) -> KernelRun:
        return run_element(call, b, layout, kernel, width)

    return run


def native_element(
    call: AttentionCall, b: int, ask: FusedRows | None, run: Runner
) -> tuple[torch.Tensor, RowMoments | None]:
    """One unpacked batch element through a fused kernel (``run``): its output ``[query, head, dim]``
    and the moments of the asked rows."""
    q, k = call.query, call.key
    assert q is not None and k is not None
    layout = ElementLayout.of([ask] if ask is not None else [], q.shape[2], k.shape[2], packed=False)
    found = run(call, b, layout, 0)
    if ask is None:
        return found.out, None
    text_len = torch.full((len(ask.rows),), len(ask.keys), dtype=torch.long)
    return found.out, row_moments(found.sums, ask.rows.cpu(), ask.text_rows, text_len, ask.cross)


def row_moments(
    sums: torch.Tensor, rows: torch.Tensor, text_rows: torch.Tensor, text_len: torch.Tensor, cross: bool
) -> RowMoments:
    """RowMoments of the query ``rows`` (positions in the element) from the kernel's sums
    ``[head, query, 10]``; ``text_rows`` are their token indices in their texts, ``text_len`` the
    lengths of those texts (a packed batch mixes texts). The moments stay on the sums' device (the
    statistics reduce them there); ``rows`` of the record, the rows' text indices, are on the host."""
    device = sums.device
    picked = sums[:, rows.to(device)].double()  # [head, row, 10]
    total = picked[..., 1]
    rows_of_text = text_rows.long().cpu()
    text_rows, text_len = text_rows.to(device).double(), text_len.to(device)
    nan = torch.full_like(total, float("nan"))
    if cross:
        positions = PositionMoments.undefined(total.shape[0], total.shape[1], device=total.device)
    else:
        positions = PositionMoments(
            p_diag=picked[..., 7] / total,
            p_prev=torch.where(text_rows[None, :] >= 1, picked[..., 8] / total, nan),
            p_next=torch.where(text_rows[None, :] < text_len[None, :] - 1, picked[..., 9] / total, nan),
            distance=picked[..., 3] / total,
        )
    return RowMoments.of(
        rows_of_text,
        picked[..., 5].amax(0).long(),
        log_z=picked[..., 0] + total.log(),
        mean_score=picked[..., 2] / total,
        p_max=1.0 / total,
        p_first=picked[..., 6] / total,
        p_special=picked[..., 4] / total,
        positions=positions,
    )
