"""A bounded, per-process cache of reads that may change, each kept for a
fixed time after it was read: what may be served a little stale, said where
it is used (the gateway's key and pricing lookups, `limits.gateway_lookup_ttl_s`).
Entries are never refreshed in place; a reader that finds none reads the
database and puts what it read."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ExpiringCache(Generic[K, V]):
    def __init__(
        self, ttl_s: float, entries_max: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl_s = ttl_s
        self._entries_max = entries_max
        self._clock = clock
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: K, value: V) -> None:
        if self._ttl_s <= 0:
            return
        now = self._clock()
        if len(self._entries) >= self._entries_max:
            self._entries = {k: e for k, e in self._entries.items() if e[0] > now}
            if len(self._entries) >= self._entries_max:
                # Every entry is live: that many keys in use within one TTL.
                # Starting over only costs reads.
                self._entries.clear()
        self._entries[key] = (now + self._ttl_s, value)

    def discard(self, key: K) -> None:
        self._entries.pop(key, None)
