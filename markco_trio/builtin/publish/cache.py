"""A small least-recently-used cache with a bound on entries and on total weight (bytes).

Used only from the trio thread (no lock): worker threads compute values and hand them back.
Entries are never stale by design — keys carry what the value depends on (file stamps, folder
mtimes) — so the only eviction is for size.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True)
class CacheStatistics:
    """Counters for metrics and tests."""

    entries: int
    weight: int
    hits: int
    misses: int
    evictions: int


class LruCache(Generic[K, V]):
    """Keeps at most `max_entries` values whose `weigh(value)` sum to at most `max_weight`;
    a value heavier than `max_weight` on its own is not kept at all."""

    def __init__(self, max_entries: int, *, max_weight: int | None = None,
                 weigh: Callable[[V], int] | None = None) -> None:
        self._data: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._max_entries = max_entries
        self._max_weight = max_weight
        self._weigh = weigh
        self._weight = 0
        self._hits = self._misses = self._evictions = 0

    def get(self, key: K) -> V | None:
        """The value for `key` (now the most recently used), or None."""
        found = self._data.get(key)
        if found is None:
            self._misses += 1
            return None
        self._data.move_to_end(key)
        self._hits += 1
        return found[0]

    def put(self, key: K, value: V) -> None:
        """Store `value`, evicting the least recently used entries to make room."""
        weight = self._weigh(value) if self._weigh is not None else 0
        if self._max_entries <= 0 or (self._max_weight is not None and weight > self._max_weight):
            return
        self.discard(key)
        self._data[key] = (value, weight)
        self._weight += weight
        while len(self._data) > self._max_entries or (
                self._max_weight is not None and self._weight > self._max_weight):
            _, (_, evicted) = self._data.popitem(last=False)
            self._weight -= evicted
            self._evictions += 1

    def discard(self, key: K) -> None:
        """Forget `key` if present."""
        found = self._data.pop(key, None)
        if found is not None:
            self._weight -= found[1]

    def __len__(self) -> int:
        return len(self._data)

    def statistics(self) -> CacheStatistics:
        """Current size and counters."""
        return CacheStatistics(len(self._data), self._weight, self._hits, self._misses,
                               self._evictions)
