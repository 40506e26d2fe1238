"""Engines and sessions for SQLite (embedded default) and PostgreSQL.

Users write plain URLs (`postgresql://user@host/db`, `sqlite:///path`); the
drivers are our choice: psycopg 3 for PostgreSQL, aiosqlite/sqlite3 for SQLite.
"""

from __future__ import annotations

import select
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from billfold.errors import InvalidRequest

SQLITE_BUSY_TIMEOUT_MS = 10_000
# Per process; with `--workers 4` that is at most 80 of PostgreSQL's default 100.
# All of them are kept once opened (no overflow): the wallet writer's load
# comes in waves (every request waits on one batch, then all answer at once),
# and overflow connections closed after each wave and opened again for the
# next cost a PostgreSQL backend start every three requests or so (measured).
POSTGRES_POOL_SIZE = 20
POSTGRES_POOL_OVERFLOW_MAX = 0


def backend_of(url: str) -> str:
    name = make_url(url).get_backend_name()
    if name in ("postgresql", "postgres"):
        return "postgresql"
    if name == "sqlite":
        return "sqlite"
    raise InvalidRequest(f"unsupported database URL scheme: {name}", code="unsupported_database")


def async_url(url: str) -> sa.URL:
    parsed = make_url(url)
    if backend_of(url) == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    return parsed.set(drivername="sqlite+aiosqlite")


def sync_url(url: str) -> sa.URL:
    parsed = make_url(url)
    if backend_of(url) == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    return parsed.set(drivername="sqlite+pysqlite")


def _configure_sqlite(engine: sa.Engine) -> None:
    """WAL for concurrent readers across processes, a busy timeout instead of
    instant `database is locked`, and `BEGIN IMMEDIATE` so a transaction takes
    the write lock up front rather than failing to upgrade halfway."""

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(url: str) -> AsyncEngine:
    if backend_of(url) == "sqlite":
        # One connection: SQLite has one writer anyway, and a single connection
        # turns lock contention inside the process into an orderly queue.
        engine = create_async_engine(async_url(url), pool_size=1, max_overflow=0, pool_timeout=60)
        _configure_sqlite(engine.sync_engine)
        return engine
    engine = create_async_engine(
        async_url(url), pool_size=POSTGRES_POOL_SIZE, max_overflow=POSTGRES_POOL_OVERFLOW_MAX
    )
    sa.event.listen(engine.sync_engine.pool, "checkout", _refuse_dropped_connection)
    return engine


def _refuse_dropped_connection(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Give no request a connection the server has dropped (a restart, a
    failover, an idle timeout): the pool then opens a new one.

    An idle connection has nothing to read; one the server ended has its
    goodbye (an error message, end of file) waiting on the socket. Looking
    costs a system call where `pool_pre_ping` costs a round trip (~0.15 ms
    per checkout, three a gateway call). It cannot see a peer that vanished
    without a word (a cut cable); the next statement then fails, and the pool
    discards the connection as it would after a ping."""
    driver = dbapi_connection.driver_connection
    if driver.closed:
        raise sa.exc.DisconnectionError("the database ended this connection")
    # poll, not select: select refuses descriptors past 1023, which a busy
    # server process reaches.
    readable = select.poll()
    readable.register(driver.fileno(), select.POLLIN)
    if readable.poll(0):
        raise sa.exc.DisconnectionError("the database ended this connection")


def create_sync_engine(url: str) -> sa.Engine:
    engine = sa.create_engine(sync_url(url), poolclass=sa.pool.NullPool)
    if backend_of(url) == "sqlite":
        _configure_sqlite(engine)
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def autocommit_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose every statement commits by itself: for reads that need
    no single snapshot, or one statement, on the hot path. On PostgreSQL they
    skip the BEGIN and COMMIT round trips (~0.25 ms of a session); SQLite's
    transactions cost no round trip, so there they are ordinary sessions."""
    if engine.dialect.name != "postgresql":
        return session_factory(engine)
    return session_factory(engine.execution_options(isolation_level="AUTOCOMMIT"))


def dialect_of(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def upsert_insert(session: AsyncSession, table: Any) -> Any:
    """An INSERT that supports `on_conflict_do_nothing` on the session's backend."""
    from sqlalchemy.dialects import postgresql, sqlite

    module = postgresql if dialect_of(session) == "postgresql" else sqlite
    return module.insert(table)
