"""The Triton fused statistics kernel (:mod:`headmap.capture.triton_kernel`): when it serves, and
one batch element through it in the compiled kernel's terms.

On a GPU it is the default for statistics: flash attention's forward, which returns the layer's
output and the statistics' row sums in one pass over the keys, in the model's own dtype (float32,
bfloat16, float16) with float32 sums. Triton is an optional dependency (the ``gpu`` extra; Linux
wheels): without it, a GPU keeps the pure-torch kernel (float32) or the exact path (16-bit models).
``HEADMAP_TRITON=0`` turns it off; ``HEADMAP_TRITON=1`` also lets it serve CPU tensors through
Triton's interpreter (``TRITON_INTERPRET=1``: tests, slow).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading
from types import ModuleType

import torch

from headmap.capture.native import ElementLayout, KernelRun
from headmap.capture.tap import AttentionCall

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
#: The widest head the kernel's tiles hold (queries and keys, and values) in registers.
MAX_HEAD_DIM = 256
_lock = threading.Lock()
_state: dict[str, ModuleType | str] = {}


def _switch() -> str:
    return os.environ.get("HEADMAP_TRITON", "").strip().lower()


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def forced() -> bool:
    """Whether ``HEADMAP_TRITON=1`` asks for the kernel on CPU tensors (through the interpreter)."""
    return _switch() in ("1", "true", "yes", "on") and _interpreted()


def unavailable() -> str | None:
    """Why the Triton kernel cannot be had in this process (None when it can)."""
    if _switch() in ("0", "false", "no", "off"):
        return "HEADMAP_TRITON=0"
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install 'headmap[gpu]')"
    found = _state.get("error")
    return str(found) if isinstance(found, str) else None


def module() -> ModuleType | None:
    """The kernel module, imported on first use (thread-safe); None if it cannot be had."""
    if unavailable() is not None:
        return None
    with _lock:
        if "module" not in _state:
            try:  # an optional dependency, so imported by name, only where a call takes this kernel
                _state["module"] = importlib.import_module("headmap.capture.triton_kernel")
            except Exception as exc:  # noqa: BLE001 - a broken triton install: keep the other kernels
                _state["error"] = f"triton could not be imported ({type(exc).__name__}: {str(exc)[:200]})"
                return None
        found = _state["module"]
        assert isinstance(found, ModuleType)
        return found


def refusal(call: AttentionCall) -> str | None:
    """Why the Triton kernel cannot serve this layer call (None when it can): it serves every
    self-attention call on a GPU without a position bias, in float32, bfloat16 or float16, heads up
    to :data:`MAX_HEAD_DIM` wide: causal and sliding-window flags, mask tensors (padding, windows,
    packed texts), softcaps, grouped keys."""
    q, k, v = call.query, call.key, call.value
    if q is None or k is None or v is None or call.weights is not None:
        return "the model computes its weights itself"
    if q.device.type == "cpu" and not forced():
        return "the Triton kernel runs on a GPU"
    if call.position_bias is not None:
        return "the layer adds a position bias (T5-style), which the Triton kernel does not take"
    if q.shape[2] != k.shape[2]:
        return "cross-attention (queries and keys of different texts), which the Triton kernel does not take"
    if any(t.dtype not in _DTYPES for t in (q, k, v)) or len({q.dtype, k.dtype, v.dtype}) > 1:
        return f"the layer runs in {q.dtype}, which the Triton kernel does not take"
    if max(q.shape[-1], v.shape[-1]) > MAX_HEAD_DIM:
        return f"heads wider than {MAX_HEAD_DIM}"
    if q.shape[1] % k.shape[1]:
        return "query heads are not a multiple of key heads"
    if call.mask is not None and call.mask.dim() != 4:
        return "a mask that is not [batch, head, query, key]"
    return unavailable()


def eligible(call: AttentionCall) -> bool:
    """Whether this layer call can take the Triton kernel (see :func:`refusal`)."""
    return refusal(call) is None


def run_element(call: AttentionCall, b: int, layout: ElementLayout, width: int = 0) -> KernelRun:
    """Batch element ``b`` through the Triton kernel, its texts placed by ``layout`` (the same
    contract as :func:`headmap.capture.native.run_element`); every tensor stays on the layer's device."""
    kernel = module()
    q, k, v = call.query, call.key, call.value
    assert kernel is not None and q is not None and k is not None and v is not None
    mask = call.mask
    if mask is not None:
        mask = mask[b : b + 1] if mask.shape[0] > 1 else mask
    out, sums, maps = kernel.fused_stats(
        q[b : b + 1],
        k[b : b + 1],
        v[b : b + 1],
        float(call.scaling),
        bool(call.is_causal),
        call.sliding_window,
        layout.track[None],
        layout.special.sort().values[None],
        layout.key_lo[None],
        layout.key_hi[None],
        mask,
        call.softcap,
        width,
    )
    return KernelRun(out[0], sums[0], None if maps is None else maps[0])
