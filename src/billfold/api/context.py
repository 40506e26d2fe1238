"""What a running Billfold process holds: its engine, sessions and clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from billfold.clock import Clock, SystemClock
from billfold.config import Settings
from billfold.db.engine import (
    autocommit_session_factory,
    backend_of,
    create_engine,
    session_factory,
)

if TYPE_CHECKING:
    from billfold.authorizations.writer import WalletWriter


@dataclass(slots=True)
class AppContext:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    #: Each statement its own transaction (see `autocommit_session_factory`).
    autocommit_sessions: async_sessionmaker[AsyncSession]
    clock: Clock = field(default_factory=SystemClock)
    _wallet_writer: WalletWriter | None = None

    @property
    def wallet_writer(self) -> WalletWriter:
        """One per process: the batching writer of the authorization hot path."""
        if self._wallet_writer is None:
            from billfold.authorizations.writer import WalletWriter

            self._wallet_writer = WalletWriter(
                self.sessions, self.clock, batching=self.settings.authorization_batching
            )
        return self._wallet_writer

    @property
    def backend(self) -> str:
        return backend_of(self.settings.database_url)

    @classmethod
    def create(cls, settings: Settings, clock: Clock | None = None) -> AppContext:
        engine = create_engine(settings.database_url)
        return cls(
            settings=settings,
            engine=engine,
            sessions=session_factory(engine),
            autocommit_sessions=autocommit_session_factory(engine),
            clock=clock or SystemClock(),
        )
