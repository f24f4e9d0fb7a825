"""Intercept the inputs of attention kernels while the model runs its own implementation.

Modern transformers models compute attention through one dispatch point,
``ALL_ATTENTION_FUNCTIONS.get_interface(...)``, which hands the post-RoPE queries and keys, the
mask, the scale and any softcap or position bias to the kernel (SDPA, eager, flash). headmap wraps
the function that dispatch returns, for the duration of a capture: it acts like a forward hook on
the kernel call of selected modules. The kernel itself still runs unchanged, so the model keeps its
speed and its outputs; the wrapper is removed on exit even when the forward raises.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AttentionCall:
    """What one attention module handed to its kernel.

    ``query`` is ``[batch, q_heads, q_len, head_dim]``; ``key`` is ``[batch, kv_heads, k_len,
    head_dim]`` (fewer heads under GQA). ``mask`` is what the model passed: boolean (True =
    may attend) or additive float, broadcastable to ``[batch, heads, q_len, k_len]``, or None
    when the kernel relies on ``is_causal``.
    """

    module: torch.nn.Module
    query: torch.Tensor
    key: torch.Tensor
    mask: torch.Tensor | None
    scaling: float
    is_causal: bool
    softcap: float | None = None
    position_bias: torch.Tensor | None = None
    sliding_window: int | None = None


Handler = Callable[[AttentionCall], None]

_lock = threading.Lock()
# Each entry: (ids of the modules it wants, or None for every module; its handler).
_taps: list[tuple[frozenset[int] | None, Handler]] = []


def _make_call(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, mask: object, kwargs: dict) -> AttentionCall:
    if mask is not None and not isinstance(mask, torch.Tensor):
        raise TypeError(
            f"{type(module).__name__} passed a {type(mask).__name__} mask (flex attention?); headmap needs "
            "a tensor mask: load the model with attn_implementation='sdpa' or 'eager'"
        )
    scaling = kwargs.get("scaling")
    is_causal = kwargs.get("is_causal")
    if is_causal is None:
        is_causal = getattr(module, "is_causal", True)
    return AttentionCall(
        module=module,
        query=query,
        key=key,
        mask=mask,  # type: ignore[arg-type]
        scaling=float(scaling) if scaling is not None else query.shape[-1] ** -0.5,
        # Kernels apply is_causal only to multi-row queries without an explicit mask.
        is_causal=bool(is_causal) and query.shape[2] > 1 and mask is None,
        softcap=kwargs.get("softcap"),
        position_bias=kwargs.get("position_bias"),
        sliding_window=kwargs.get("sliding_window"),
    )


def _wrap(kernel: Callable) -> Callable:
    @functools.wraps(kernel)
    def tapped(module, query, key, value, attention_mask, *args, **kwargs):  # type: ignore[no-untyped-def]
        interested = [h for ids, h in list(_taps) if ids is None or id(module) in ids]
        if interested:
            call = _make_call(module, query, key, attention_mask, kwargs)
            for handler in interested:
                handler(call)
        return kernel(module, query, key, value, attention_mask, *args, **kwargs)

    tapped.__headmap_tapped__ = True  # type: ignore[attr-defined]
    return tapped


def _install() -> None:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    original = type(ALL_ATTENTION_FUNCTIONS).get_interface

    def get_interface(attn_implementation: str, default: Callable) -> Callable:
        kernel = original(ALL_ATTENTION_FUNCTIONS, attn_implementation, default)
        return kernel if getattr(kernel, "__headmap_tapped__", False) else _wrap(kernel)

    # An instance attribute shadows the class method for this one registry only.
    ALL_ATTENTION_FUNCTIONS.get_interface = get_interface  # type: ignore[method-assign]


def _uninstall() -> None:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if "get_interface" in vars(ALL_ATTENTION_FUNCTIONS):
        del ALL_ATTENTION_FUNCTIONS.get_interface


@contextmanager
def tap(handler: Handler, modules: list[torch.nn.Module] | None = None) -> Iterator[None]:
    """Call ``handler`` with every :class:`AttentionCall` of ``modules`` (all modules if None).

    Taps nest and may overlap; the dispatch wrapper is installed while at least one is active.
    """
    entry = (None if modules is None else frozenset(id(m) for m in modules), handler)
    with _lock:
        if not _taps:
            _install()
        _taps.append(entry)
    try:
        yield
    finally:
        with _lock:
            _taps.remove(entry)
            if not _taps:
                _uninstall()
