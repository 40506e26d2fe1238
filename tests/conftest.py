"""Shared fixtures: every test runs against SQLite and PostgreSQL, each in a
fresh migrated database of its own.

PostgreSQL databases are cloned from a template migrated once per run
(`CREATE DATABASE … TEMPLATE … STRATEGY WAL_LOG`, ~0.07 s) and dropped on
background threads; SQLite files are copied from a migrated template file.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from billfold.api.app import create_app
from billfold.api.context import AppContext
from billfold.clock import FrozenClock
from billfold.config import Settings
from billfold.db.migrate import upgrade
from billfold.organizations import service as organizations

PG_ADMIN_URL = os.environ.get(
    "BILLFOLD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = [
    b for b in os.environ.get("BILLFOLD_TEST_BACKENDS", "sqlite,postgresql").split(",") if b
]

_counter = itertools.count()


def _pg_url(database: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


def _pg_admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        connection.execute(sql)  # type: ignore[arg-type]


@dataclass
class Templates:
    sqlite_path: Path | None
    pg_name: str | None


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Templates]:
    sqlite_path = None
    pg_name = None
    if "sqlite" in BACKENDS:
        sqlite_path = tmp_path_factory.mktemp("template") / "template.db"
        upgrade(f"sqlite:///{sqlite_path}")
    if "postgresql" in BACKENDS:
        pg_name = f"billfold_tpl_{os.getpid()}"
        _pg_admin(f"DROP DATABASE IF EXISTS {pg_name}")
        _pg_admin(f"CREATE DATABASE {pg_name}")
        upgrade(_pg_url(pg_name))
    yield Templates(sqlite_path, pg_name)
    if pg_name is not None:
        _pg_admin(f"DROP DATABASE IF EXISTS {pg_name} WITH (FORCE)")


class _Dropper:
    """Drops finished test databases on background threads: DROP DATABASE
    waits for a checkpoint (~0.5 s) that the next test need not wait for, and
    drops running side by side share one checkpoint."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="pg-drop")
        self._drops: list[Future[None]] = []

    def drop(self, name: str) -> None:
        self._drops.append(
            self._pool.submit(_pg_admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        )

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        failures = [str(drop.exception()) for drop in self._drops if drop.exception()]
        assert not failures, failures


@pytest.fixture(scope="session")
def _pg_dropper() -> Iterator[_Dropper]:
    dropper = _Dropper()
    yield dropper
    dropper.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(
    backend: str, templates: Templates, tmp_path: Path, _pg_dropper: _Dropper
) -> Iterator[str]:
    """A fresh, migrated database for this test alone."""
    if backend == "sqlite":
        assert templates.sqlite_path is not None
        path = tmp_path / "billfold.db"
        shutil.copyfile(templates.sqlite_path, path)
        yield f"sqlite:///{path}"
        return
    assert templates.pg_name is not None
    name = f"billfold_t_{os.getpid()}_{next(_counter)}"
    # WAL_LOG, not FILE_COPY: FILE_COPY forces two checkpoints per clone,
    # ten times slower here for a template this small.
    _pg_admin(f"CREATE DATABASE {name} TEMPLATE {templates.pg_name} STRATEGY WAL_LOG")
    yield _pg_url(name)
    _pg_dropper.drop(name)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
async def ctx(database_url: str, clock: FrozenClock) -> AsyncIterator[AppContext]:
    settings = Settings(database_url=database_url, log_level="WARNING", run_worker_in_server=False)
    context = AppContext.create(settings, clock=clock)
    yield context
    await context.engine.dispose()


@pytest.fixture
def app(ctx: AppContext) -> FastAPI:
    return create_app(ctx, run_worker=False)


@dataclass
class Tenant:
    organization_id: str
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


async def make_tenant(ctx: AppContext, name: str = "Acme") -> Tenant:
    async with ctx.sessions() as session:
        organization, issued = await organizations.create_organization(session, ctx.clock, name)
        await session.commit()
    return Tenant(organization.id, issued.secret)


@pytest.fixture
async def tenant(ctx: AppContext) -> Tenant:
    return await make_tenant(ctx, "Acme")


@pytest.fixture
async def other_tenant(ctx: AppContext) -> Tenant:
    return await make_tenant(ctx, "Other Org")


@pytest.fixture
async def client(app: FastAPI, tenant: Tenant) -> AsyncIterator[httpx.AsyncClient]:
    """An API client authenticated as `tenant`."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://billfold.test", headers=tenant.headers
    ) as http:
        yield http


@pytest.fixture
async def intruder(app: FastAPI, other_tenant: Tenant) -> AsyncIterator[httpx.AsyncClient]:
    """An API client of the second organization."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://billfold.test", headers=other_tenant.headers
    ) as http:
        yield http


@pytest.fixture
async def anonymous(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://billfold.test") as http:
        yield http
