"""Server time. Everything that reads the time goes through a Clock so tests can move it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock that only moves when told to; for tests and simulations."""

    def __init__(self, start: datetime) -> None:
        assert start.tzinfo is not None, "clock times are timezone-aware"
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        assert delta >= timedelta(0), "time never goes back"
        self._now += delta

    def set(self, when: datetime) -> None:
        assert when >= self._now, "time never goes back"
        self._now = when
