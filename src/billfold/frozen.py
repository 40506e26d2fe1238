"""A bounded, per-process cache of rows the database never changes once
written: a product version's prices, a meter's definition.

Reading them again for every estimate and every ingest request cost more
than the rest of the estimate together; since no statement ever updates or
deletes them, a copy is as good as the row, in any process, for ever. Keys
always include the organization. Only what a committed row says goes in: the
callers read them in transactions that never create them.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from billfold import limits

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class FrozenCache(Generic[K, V]):
    def __init__(self, entries_max: int = limits.frozen_rows_cached_max) -> None:
        self._entries: dict[K, V] = {}
        self._entries_max = entries_max

    def get(self, key: K) -> V | None:
        return self._entries.get(key)

    def put(self, key: K, value: V) -> None:
        if len(self._entries) >= self._entries_max:
            # Rarely reached (that many versions or meters in use at once);
            # starting over is simpler than recency order and only costs reads.
            self._entries.clear()
        self._entries[key] = value
