"""The `billfold` command."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Annotated

import typer

from billfold.api.context import AppContext
from billfold.config import Settings
from billfold.db.migrate import upgrade
from billfold.observability import configure_logging
from billfold.organizations import service as organizations

app = typer.Typer(
    help="Billfold: real-time billing for AI and API products.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
org_app = typer.Typer(help="Organizations (tenants).", no_args_is_help=True)
app.add_typer(org_app, name="org")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    workers: Annotated[int, typer.Option(help="Server processes.")] = 1,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Don't run webhook delivery in this process.")
    ] = False,
) -> None:
    """Run migrations, then serve the API (and deliver webhooks unless --no-worker)."""
    import os

    import uvicorn

    settings = Settings.from_env()
    configure_logging(settings.log_level)
    upgrade(settings.database_url)
    # Child processes build their own app from the environment.
    os.environ["BILLFOLD_DATABASE_URL"] = settings.database_url
    if no_worker:
        os.environ["BILLFOLD_SERVE_WORKER"] = "0"
    uvicorn.run(
        "billfold.api.asgi:app",
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


@app.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    settings = Settings.from_env()
    upgrade(settings.database_url)
    typer.echo("migrations applied")


@app.command()
def worker() -> None:
    """Deliver webhooks and do housekeeping, without serving HTTP."""
    from billfold.worker import Worker

    settings = Settings.from_env()
    configure_logging(settings.log_level)
    upgrade(settings.database_url)

    async def main() -> None:
        ctx = AppContext.create(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await Worker(ctx).run(stop)
        finally:
            await ctx.engine.dispose()

    asyncio.run(main())


@org_app.command("create")
def org_create(
    name: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create an organization and print its first API key (shown only once)."""
    settings = Settings.from_env()
    upgrade(settings.database_url)

    async def main() -> tuple[str, str]:
        ctx = AppContext.create(settings)
        try:
            async with ctx.sessions() as session:
                organization, issued = await organizations.create_organization(
                    session, ctx.clock, name
                )
                await session.commit()
            return organization.id, issued.secret
        finally:
            await ctx.engine.dispose()

    organization_id, api_key = asyncio.run(main())
    if as_json:
        typer.echo(json.dumps({"organization_id": organization_id, "api_key": api_key}))
    else:
        typer.echo(f"organization: {organization_id}\napi key (shown once): {api_key}")
