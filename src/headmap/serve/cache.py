"""A bounded, thread-safe cache that computes each missing entry once, however many ask for it.

The dashboard keeps captures per (model, text) so that moving a slider only redraws. Several
browser tabs call it from the server's worker threads at once: the cache is guarded by one lock,
and a computation in flight for a key makes later callers for that key wait for its result
instead of capturing the same text twice. Entries are evicted least recently used first once
their total size passes ``max_bytes``; an entry larger than the whole budget is returned but not kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


class BoundedCache(Generic[V]):
    """LRU by bytes: ``get_or_compute(key, compute)`` returns the cached value or computes it once."""

    def __init__(self, max_bytes: int, size_of: Callable[[V], int]) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, not {max_bytes}")
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._pending: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()
        self._bytes = 0
        self.stats = CacheStats()

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def _lookup(self, key: Hashable) -> tuple[V, int] | None:
        """Under the lock: the cached ``(value, size)`` (marked as just used), or None."""
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        self.stats.hits += 1
        return item

    def get_or_compute(self, key: Hashable, compute: Callable[[], V]) -> V:
        with self._lock:
            found = self._lookup(key)
            if found is not None:
                return found[0]
            gate = self._pending.setdefault(key, threading.Lock())
        # One computation per key: later callers queue on the key's gate, then find the value.
        with gate:
            with self._lock:
                found = self._lookup(key)
                if found is not None:
                    return found[0]
                self.stats.misses += 1
            try:
                value = compute()
            finally:
                with self._lock:
                    self._pending.pop(key, None)
            self._store(key, value)
            return value

    def get(self, key: Hashable) -> V | None:
        """The cached value (marked as just used), or None."""
        with self._lock:
            found = self._lookup(key)
            return None if found is None else found[0]

    def put(self, key: Hashable, value: V) -> None:
        """Keep ``value`` under ``key`` (replacing any), evicting the least recently used beyond the budget."""
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
        self._store(key, value)

    def _store(self, key: Hashable, value: V) -> None:
        size = int(self._size_of(value))
        with self._lock:
            if size > self.max_bytes:
                return
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped
                self.stats.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
