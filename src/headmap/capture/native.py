"""The compiled fused-statistics kernel (``kernels/fused_stats.cpp``): built once, then loaded.

The pure-torch fused kernel (:mod:`headmap.capture.fused`) materializes each block's scores in
memory and reads them several times; on a CPU the memory traffic, not the arithmetic, is what it
pays for. This kernel works in tiles that stay in cache (flash attention's scheme) and reduces the
statistics' sums from the tile while it is hot. It is compiled with torch's own toolchain
(``torch.utils.cpp_extension``) on first use, into headmap's cache folder, and uses torch's BLAS
entry point and torch's vectorized ``exp`` (the one ``torch.exp`` uses), so its numbers agree with
the pure-torch path to float32 rounding (tested).

It is built for the first text of 1,024 tokens or more (compiling takes about a minute, once per
machine and torch version), then serves texts of every length, on CPUs where torch runs AVX2 or
AVX-512 code, for layers whose masks are causal/sliding-window flags or absent and that
have no softcap or position bias. Without a C++ compiler, or with ``HEADMAP_NATIVE=0``, headmap
keeps the pure-torch kernel, with the same results.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
from pathlib import Path
from types import ModuleType

import torch

from headmap.capture.fused_rows import FusedRows
from headmap.capture.moments import PositionMoments, RowMoments
from headmap.capture.recompute import implicit_visible_counts
from headmap.capture.tap import AttentionCall
from headmap.models.cache import cache_root

#: Texts shorter than this take the pure-torch kernel: there the compile would not pay off.
MIN_TOKENS = 1024
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


def eligible(call: AttentionCall) -> bool:
    """Whether this layer call can take the compiled kernel (flags-only masks, plain scores, CPU):
    texts of :data:`MIN_TOKENS` and more, which pay for building it, and any text once it is built."""
    q = call.query
    return (
        q is not None
        and q.device.type == "cpu"
        and (q.shape[2] >= MIN_TOKENS or built())
        and call.mask is None
        and call.softcap is None
        and call.position_bias is None
        and q.shape[2] == call.key.shape[2]  # type: ignore[union-attr]  # a call with a query has keys
        and unavailable() is None
    )


def native_element(
    call: AttentionCall, b: int, ask: FusedRows | None, kernel: ModuleType
) -> tuple[torch.Tensor, RowMoments | None]:
    """One batch element through the compiled kernel: its output ``[query, head, dim]`` and moments."""
    q, k, v = call.query, call.key, call.value
    assert q is not None and k is not None and v is not None
    n_k = k.shape[2]
    text_pos = torch.zeros(n_k, dtype=torch.float32)
    track = torch.full((q.shape[2], 4), -1, dtype=torch.long)
    special = torch.zeros(0, dtype=torch.long)
    if ask is not None:
        text_pos[ask.keys] = torch.arange(len(ask.keys), dtype=torch.float32)
        track[:, 0] = ask.keys[0]
        track[ask.keys, 1] = ask.keys  # the query token itself (one text on both sides)
        track[ask.keys[1:], 2] = ask.keys[:-1]
        track[ask.keys[:-1], 3] = ask.keys[1:]
        special = ask.keys[ask.special].to(torch.long)
    vaug = v[b].float().contiguous()
    out, sums = kernel.fused_stats(
        (q[b].float() * call.scaling).contiguous(),
        k[b].float().transpose(1, 2).contiguous(),
        vaug,
        bool(call.is_causal),
        int(call.sliding_window or -1),
        track,
        special,
        text_pos,
    )
    return out, (None if ask is None else _moments(call, ask, sums, n_k))


def _moments(call: AttentionCall, ask: FusedRows, sums: torch.Tensor, n_k: int) -> RowMoments:
    """RowMoments of the asked rows from the kernel's per-row sums ``[head, row, 9]``."""
    picked = sums[:, ask.rows].double()  # [head, row, 9]
    total = picked[..., 1]
    text_rows = ask.text_rows.double()
    last = len(ask.keys) - 1
    nan = torch.full_like(total, float("nan"))
    if ask.cross:
        positions = PositionMoments.undefined(total.shape[0], total.shape[1], device=total.device)
    else:
        positions = PositionMoments(
            p_diag=picked[..., 6] / total,
            p_prev=torch.where(text_rows[None, :] >= 1, picked[..., 7] / total, nan),
            p_next=torch.where(text_rows[None, :] < last, picked[..., 8] / total, nan),
            distance=picked[..., 3] / total,
        )
    return RowMoments.of(
        ask.text_rows,
        implicit_visible_counts(call, ask.rows, torch.arange(n_k)),
        log_z=picked[..., 0] + total.log(),
        mean_score=picked[..., 2] / total,
        p_max=1.0 / total,
        p_first=picked[..., 5] / total,
        p_special=picked[..., 4] / total,
        positions=positions,
    )
