"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from billfold import __version__
from billfold.api import health, problems
from billfold.api.context import AppContext
from billfold.api.middleware import RequestMiddleware
from billfold.assets.endpoints import router as assets_router
from billfold.authorizations.endpoints import reads as authorization_reads
from billfold.authorizations.endpoints import writes as authorization_writes
from billfold.catalog.endpoints import router as catalog_router
from billfold.config import Settings
from billfold.costs.endpoints import router as costs_router
from billfold.customers.endpoints import router as customers_router
from billfold.gateway.endpoints import issuing as gateway_keys_issuing
from billfold.gateway.endpoints import router as gateway_keys_router
from billfold.invoicing.endpoints import router as invoicing_router
from billfold.metering.endpoints import router as metering_router
from billfold.organizations.endpoints import issuing as api_keys_issuing
from billfold.organizations.endpoints import router as api_keys_router
from billfold.subscriptions.endpoints import entitlements_router
from billfold.subscriptions.endpoints import router as subscriptions_router
from billfold.wallets.endpoints import router as wallets_router
from billfold.webhooks.endpoints import router as webhooks_router
from billfold.worker import Worker

ROUTERS = (
    api_keys_issuing,
    api_keys_router,
    webhooks_router,
    assets_router,
    customers_router,
    wallets_router,
    gateway_keys_issuing,
    gateway_keys_router,
    authorization_writes,
    authorization_reads,
    metering_router,
    catalog_router,
    costs_router,
    subscriptions_router,
    entitlements_router,
    invoicing_router,
)


def create_app(ctx: AppContext | None = None, *, run_worker: bool | None = None) -> FastAPI:
    """Build the API. With no context, one is made from the environment."""
    context = ctx or AppContext.create(Settings.from_env())
    with_worker = context.settings.run_worker_in_server if run_worker is None else run_worker

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(Worker(context).run(stop)) if with_worker else None
        try:
            yield
        finally:
            stop.set()
            if task is not None:
                await task
            if ctx is None:
                await context.engine.dispose()

    app = FastAPI(
        title="Billfold",
        version=__version__,
        description="Real-time billing for AI and API products: holds before usage, "
        "an append-only double-entry ledger, and everything invoices need.",
        lifespan=lifespan,
    )
    app.state.ctx = context
    problems.install(app)
    app.include_router(health.router)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(RequestMiddleware)
    return app
