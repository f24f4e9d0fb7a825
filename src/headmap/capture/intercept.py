"""The engine's addressing rule, written once: which asked layer an attention call computes, and the
scope that taps those layers on this thread.

A layer is a :class:`~headmap.capture.discovery.Site`: a module and which of its calls in one forward
(a module that serves several layers, as ALBERT's does, is called once per layer). An attention call
is therefore addressed by ``(id(module), occurrence)``, where the occurrence is the number of earlier
calls of that module in the current forward. :class:`LayerAddressing` holds that map;
:class:`CallCounter` counts the calls of one forward (a fresh one per forward, or :meth:`reset` it).
Capture, ablation/gating and head importance all address calls this way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import torch

from headmap.capture.discovery import Architecture, Site
from headmap.capture.tap import Around, AttentionCall, CapturePath, module_scope, tap_around, weights_scope
from headmap.result import LayerKey

__all__ = ["CallCounter", "LayerAddressing"]


@dataclass
class CallCounter:
    """Calls of each module so far in one forward: ``id(module) -> count``."""

    calls: dict[int, int] = field(default_factory=dict)

    def next(self, module: torch.nn.Module) -> int:
        """This call's occurrence of ``module`` (0 for its first call in the forward), counted."""
        seen = self.calls.get(id(module), 0)
        self.calls[id(module)] = seen + 1
        return seen

    def reset(self) -> None:
        """Start counting a new forward."""
        self.calls.clear()


class LayerAddressing:
    """Maps the attention calls of a forward to the asked layers of ``arch``.

    ``sites`` are the asked layers' sites; ``modules`` the distinct modules serving them (the ones to
    tap); ``paths`` how they are intercepted.
    """

    def __init__(self, arch: Architecture, layers: Sequence[LayerKey]) -> None:
        self.sites: dict[LayerKey, Site] = {key: arch.sites[key] for key in layers}
        self._layer_of = {(id(s.module), s.occurrence): key for key, s in self.sites.items()}
        # How many layers each module serves in one forward (3 for a 3-layer ALBERT, else 1): a count
        # that runs on past one forward (a forward hook missed, generation with a cache) wraps round.
        self._per_forward: dict[int, int] = {}
        for site in arch.sites.values():
            self._per_forward[id(site.module)] = self._per_forward.get(id(site.module), 0) + 1
        self.modules: list[torch.nn.Module] = list(
            {id(s.module): s.module for s in self.sites.values()}.values()
        )
        self.paths: frozenset[CapturePath] = frozenset(s.path for s in self.sites.values())

    @property
    def layers(self) -> frozenset[LayerKey]:
        return frozenset(self.sites)

    def locate(self, call: AttentionCall, counter: CallCounter) -> LayerKey | None:
        """The asked layer ``call`` computes (None for a layer not asked), counting the call."""
        occurrence = counter.next(call.module)
        per_forward = self._per_forward.get(id(call.module), 1)
        return self._layer_of.get((id(call.module), occurrence % per_forward))

    @contextmanager
    def intercept(self, around: Around) -> Iterator[None]:
        """Run ``around`` for the kernel calls of the asked layers on this thread.

        Installs the module scope that torch SDPA calls need to be attributed, and the hooks that
        hand eager-weights layers' weights to the tap.
        """
        with ExitStack() as scope:
            if CapturePath.TORCH_SDPA in self.paths:
                scope.enter_context(module_scope(self.modules))
            if CapturePath.EAGER_WEIGHTS in self.paths:
                eager = [
                    (s.module, s.weights_index) for s in self.sites.values() if s.weights_index is not None
                ]
                scope.enter_context(weights_scope(eager))
            scope.enter_context(tap_around(around, self.modules))
            yield
