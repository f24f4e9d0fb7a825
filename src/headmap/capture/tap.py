"""Intercept attention kernel calls while the model runs its own implementation.

Two interception points cover the models that keep a fast kernel:

- **dispatch**: transformers models compute attention through ``ALL_ATTENTION_FUNCTIONS
  .get_interface(...)``, which hands the post-RoPE queries and keys, the mask, the scale and any
  softcap or position bias to the kernel (SDPA, eager, flash). headmap wraps the function that
  dispatch returns.
- **torch SDPA**: models with attention code of their own (Falcon, ...) that call
  ``torch.nn.functional.scaled_dot_product_attention`` directly. headmap wraps that function and
  attributes each call to the innermost *scoped* module running on the thread (see
  :func:`module_scope`).

Interception is per thread: a tap registered by one thread never sees another thread's calls, so
two captures on one model at once each get exactly their own. The wrappers are installed while any
thread has a tap and removed afterwards, also when the forward raises.

A tap is *around advice*: ``around(call, proceed)`` gets the :class:`AttentionCall` and a function
that runs the real kernel and returns its output as ``[batch, query, head, dim]``; it returns that
output (observed, changed, or computed its own way). Observers just call ``proceed()``.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle


class CapturePath(enum.Enum):
    """Which interception point sees a layer's attention (see the module docstring)."""

    DISPATCH = "dispatch"
    TORCH_SDPA = "torch-sdpa"
    EAGER_WEIGHTS = "eager-weights"

    def describe(self) -> str:
        return {
            CapturePath.DISPATCH: "tapped at transformers' attention dispatch; the model kept its own kernel",
            CapturePath.TORCH_SDPA: "tapped at torch's scaled_dot_product_attention; "
            "the model kept its own kernel",
            CapturePath.EAGER_WEIGHTS: "taken from the weights the model computes itself "
            "(eager-only attention), one layer at a time",
        }[self]


@dataclass(frozen=True)
class AttentionCall:
    """What one attention module handed to its kernel.

    ``query`` is ``[batch, q_heads, q_len, head_dim]``; ``key`` and ``value`` are ``[batch, kv_heads,
    k_len, head_dim]`` (fewer heads under GQA). ``mask`` is what the model passed: boolean (True =
    may attend) or additive float, broadcastable to ``[batch, heads, q_len, k_len]``, or None
    when the kernel relies on ``is_causal``. ``weights`` is set instead of query and key where the
    model computed its attention weights itself (``[batch, heads, q_len, k_len]``, see
    :func:`weights_scope`).
    """

    module: torch.nn.Module
    query: torch.Tensor | None
    key: torch.Tensor | None
    mask: torch.Tensor | None
    scaling: float
    is_causal: bool
    softcap: float | None = None
    position_bias: torch.Tensor | None = None
    sliding_window: int | None = None
    value: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    via: CapturePath = CapturePath.DISPATCH
    """Which interception point saw the call."""


Proceed = Callable[[], torch.Tensor]
Around = Callable[[AttentionCall, Proceed], torch.Tensor]


@dataclass(eq=False)
class _Tap:
    modules: frozenset[int] | None
    around: Around

    def wants(self, module: torch.nn.Module) -> bool:
        return self.modules is None or id(module) in self.modules


@dataclass
class _ThreadState:
    taps: list[_Tap] = field(default_factory=list)
    scopes: list[torch.nn.Module] = field(default_factory=list)  # innermost scoped module last
    in_dispatch: int = 0  # >0 while a dispatched kernel runs (it may call torch SDPA itself)


_local = threading.local()
_lock = threading.Lock()
_active = 0  # threads with at least one tap; the wrappers are installed while > 0
_original_sdpa = torch.nn.functional.scaled_dot_product_attention


def _state() -> _ThreadState:
    state = getattr(_local, "state", None)
    if state is None:
        state = _local.state = _ThreadState()
    return state


def _chain(call: AttentionCall, taps: list[_Tap], base: Proceed) -> torch.Tensor:
    """Run ``taps`` around ``base``, the first registered outermost."""
    proceed = base
    for tap_ in reversed(taps):
        proceed = (lambda t, inner: lambda: t.around(call, inner))(tap_, proceed)
    return proceed()


def _make_call(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: object,
    kwargs: dict[str, Any],
) -> AttentionCall:
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
        value=value,
        mask=mask if isinstance(mask, torch.Tensor) else None,
        scaling=float(scaling) if scaling is not None else query.shape[-1] ** -0.5,
        # Kernels apply is_causal only to multi-row queries without an explicit mask.
        is_causal=bool(is_causal) and query.shape[2] > 1 and mask is None,
        softcap=kwargs.get("softcap"),
        position_bias=kwargs.get("position_bias"),
        sliding_window=kwargs.get("sliding_window"),
    )


#: transformers' attention interface: ``(module, query, key, value, mask, ...) -> (output, weights)``.
Kernel = Callable[..., Any]


def _wrap_dispatched(kernel: Kernel) -> Kernel:
    def tapped(
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: object,
        *args: Any,
        **kwargs: Any,
    ) -> tuple[object, ...]:
        state = _state()
        taps = [t for t in state.taps if t.wants(module)]
        rest: list[tuple[object, ...]] = [(None,)]

        def base() -> torch.Tensor:
            state.in_dispatch += 1
            try:
                out = kernel(module, query, key, value, attention_mask, *args, **kwargs)
            finally:
                state.in_dispatch -= 1
            if isinstance(out, tuple):
                rest[0] = out[1:]
                first: torch.Tensor = out[0]
                return first
            whole: torch.Tensor = out
            return whole

        if not taps:
            return (base(), *rest[0])
        call = _make_call(module, query, key, value, attention_mask, kwargs)
        return (_chain(call, taps, base), *rest[0])

    tapped.__wrapped__ = kernel  # type: ignore[attr-defined]  # marks a wrapper, as functools.wraps does
    tapped.__headmap_tapped__ = True  # type: ignore[attr-defined]  # our marker on a plain function
    return tapped


def _tapped_sdpa(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    **kwargs: Any,
) -> torch.Tensor:
    state = _state()

    def base() -> torch.Tensor:
        return _original_sdpa(
            query,
            key,
            value,
            attn_mask=attn_mask,
            dropout_p=dropout_p,
            is_causal=is_causal,
            scale=scale,
            enable_gqa=enable_gqa,
            **kwargs,
        )

    module = state.scopes[-1] if state.scopes else None
    taps = [t for t in state.taps if module is not None and t.wants(module)] if not state.in_dispatch else []
    if module is None or not taps:
        return base()
    call = AttentionCall(
        module=module,
        query=query,
        key=key,
        value=value,
        mask=attn_mask,
        scaling=float(scale) if scale is not None else query.shape[-1] ** -0.5,
        is_causal=bool(is_causal) and attn_mask is None and query.shape[2] > 1,
        via=CapturePath.TORCH_SDPA,
    )
    # Advice sees the dispatch layout [batch, query, head, dim]; torch's is [batch, head, query, dim].
    out = _chain(call, taps, lambda: base().transpose(1, 2))
    return out.transpose(1, 2)


def _install() -> None:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    original = type(ALL_ATTENTION_FUNCTIONS).get_interface

    def get_interface(attn_implementation: str, default: Kernel) -> Kernel:
        kernel = original(ALL_ATTENTION_FUNCTIONS, attn_implementation, default)
        return kernel if getattr(kernel, "__headmap_tapped__", False) else _wrap_dispatched(kernel)

    # An instance attribute shadows the class method for this one registry only.
    ALL_ATTENTION_FUNCTIONS.get_interface = get_interface  # type: ignore[method-assign]  # deliberate patch
    torch.nn.functional.scaled_dot_product_attention = _tapped_sdpa


def _uninstall() -> None:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if "get_interface" in vars(ALL_ATTENTION_FUNCTIONS):
        del ALL_ATTENTION_FUNCTIONS.get_interface
    torch.nn.functional.scaled_dot_product_attention = _original_sdpa


@contextmanager
def tap_around(around: Around, modules: list[torch.nn.Module] | None = None) -> Iterator[None]:
    """Run ``around`` for every kernel call of ``modules`` (all modules if None) on this thread.

    Taps nest and may overlap (the first registered is outermost); the wrappers are installed
    while any thread has a tap.
    """
    global _active
    entry = _Tap(None if modules is None else frozenset(id(m) for m in modules), around)
    state = _state()
    with _lock:
        if not state.taps:
            if _active == 0:
                _install()
            _active += 1
        state.taps.append(entry)
    try:
        yield
    finally:
        with _lock:
            state.taps.remove(entry)
            if not state.taps:
                state.scopes.clear()
                _active -= 1
                if _active == 0:
                    _uninstall()


@contextmanager
def tap(
    handler: Callable[[AttentionCall], None], modules: list[torch.nn.Module] | None = None
) -> Iterator[None]:
    """Call ``handler`` with every :class:`AttentionCall` of ``modules`` (all if None), then the kernel."""

    def observe(call: AttentionCall, proceed: Proceed) -> torch.Tensor:
        handler(call)
        return proceed()

    with tap_around(observe, modules):
        yield


def _enter(module: torch.nn.Module, args: object) -> None:
    _state().scopes.append(module)


def _leave(module: torch.nn.Module, args: object, output: object) -> None:
    scopes = _state().scopes
    if scopes and scopes[-1] is module:
        scopes.pop()


# (kind, id(module)) -> (threads using the hooks, their handles); shared so that one thread's exit
# never removes hooks another thread's forward is relying on.
_shared: dict[tuple[str, int], tuple[int, list[RemovableHandle]]] = {}


@contextmanager
def _shared_hooks(
    kind: str, modules: list[torch.nn.Module], register: Callable[[torch.nn.Module], list[RemovableHandle]]
) -> Iterator[None]:
    with _lock:
        for module in modules:
            users, handles = _shared.get((kind, id(module)), (0, []))
            _shared[(kind, id(module))] = (users + 1, handles if users else register(module))
    try:
        yield
    finally:
        with _lock:
            for module in modules:
                users, handles = _shared[(kind, id(module))]
                if users == 1:
                    for handle in handles:
                        handle.remove()
                    del _shared[(kind, id(module))]
                else:
                    _shared[(kind, id(module))] = (users - 1, handles)


def module_scope(modules: list[torch.nn.Module]) -> AbstractContextManager[None]:
    """Track, per thread, which of ``modules`` is running, so torch SDPA calls can be attributed."""
    return _shared_hooks(
        "scope",
        modules,
        lambda m: [m.register_forward_pre_hook(_enter), m.register_forward_hook(_leave, always_call=True)],
    )


def _weights_hook(index: int) -> Callable[[torch.nn.Module, object, object], object]:
    def hook(module: torch.nn.Module, args: object, output: object) -> object:
        taps = [t for t in _state().taps if t.wants(module)]
        if not taps or not isinstance(output, tuple) or not isinstance(output[index], torch.Tensor):
            return None
        call = AttentionCall(
            module=module,
            query=None,
            key=None,
            mask=None,
            scaling=1.0,
            is_causal=False,
            weights=output[index],
            via=CapturePath.EAGER_WEIGHTS,
        )
        for tap_ in taps:
            tap_.around(call, lambda: output[0])
        # The model would otherwise keep every layer's full weights for its own return value, which
        # a capture never reads: dropping them keeps memory at one layer.
        return (*output[:index], None, *output[index + 1 :])

    return hook


def weights_scope(modules: list[tuple[torch.nn.Module, int]]) -> AbstractContextManager[None]:
    """Hand the attention weights that ``module`` returns at ``index`` of its output to this thread's taps.

    For models that compute their weights themselves (no kernel to tap); the taps' advice cannot
    change the output on this path.
    """
    index_of = {id(m): i for m, i in modules}
    return _shared_hooks(
        "weights",
        [m for m, _ in modules],
        lambda m: [m.register_forward_hook(_weights_hook(index_of[id(m)]))],
    )
