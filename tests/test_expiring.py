"""The per-process cache of reads that may be served a little stale."""

from __future__ import annotations

from billfold.expiring import ExpiringCache


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_lives_for_its_ttl_and_no_longer() -> None:
    ticks = Ticks()
    cache: ExpiringCache[str, int] = ExpiringCache(1.0, 10, ticks)
    cache.put("a", 1)
    ticks.now += 0.999
    assert cache.get("a") == 1
    ticks.now += 0.001
    assert cache.get("a") is None
    cache.put("a", 2)  # read again: a new entry, a new lifetime
    ticks.now += 0.5
    assert cache.get("a") == 2
    cache.discard("a")
    assert cache.get("a") is None


def test_a_ttl_of_zero_keeps_nothing() -> None:
    cache: ExpiringCache[str, int] = ExpiringCache(0.0, 10, Ticks())
    cache.put("a", 1)
    assert cache.get("a") is None


def test_it_never_holds_more_than_its_bound() -> None:
    ticks = Ticks()
    cache: ExpiringCache[int, int] = ExpiringCache(1.0, 3, ticks)
    for key in range(3):
        cache.put(key, key)
    ticks.now += 2  # all three expired: making room drops them, not the new one
    cache.put(3, 3)
    assert [cache.get(key) for key in range(4)] == [None, None, None, 3]
    for key in range(4, 6):
        cache.put(key, key)
    cache.put(6, 6)  # three live entries: starts over with the new one
    assert [cache.get(key) for key in range(3, 7)] == [None, None, None, 6]
    assert len(cache._entries) == 1
