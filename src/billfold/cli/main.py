"""The `billfold` command."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import Annotated

import typer

from billfold.api.context import AppContext
from billfold.config import Settings
from billfold.db.migrate import upgrade
from billfold.observability import configure_logging, logging_dict_config
from billfold.organizations import service as organizations

app = typer.Typer(
    help="Billfold: real-time billing for AI and API products.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
org_app = typer.Typer(help="Organizations (tenants).", no_args_is_help=True)
app.add_typer(org_app, name="org")
ledger_app = typer.Typer(help="The ledger.", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    workers: Annotated[int, typer.Option(min=1, help="Server processes.")] = 1,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Don't run webhook delivery in this process.")
    ] = False,
) -> None:
    """Run migrations, then serve the API (and deliver webhooks unless --no-worker)."""
    # Granian, chosen by measurement over uvicorn: see bench/asgi_servers.py and
    # the README. Imported here so that other commands don't load a server.
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.log import LogLevels

    settings = Settings.from_env()
    configure_logging(settings.log_level)
    upgrade(settings.database_url)
    # Worker processes build their own app from the environment.
    os.environ["BILLFOLD_DATABASE_URL"] = settings.database_url
    if no_worker:
        os.environ["BILLFOLD_SERVE_WORKER"] = "0"
    Granian(
        "billfold.api.asgi:app",
        address=host,
        port=port,
        workers=workers,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        websockets=False,
        log_level=LogLevels(settings.log_level.lower()),
        log_dictconfig=logging_dict_config(settings.log_level),
        log_access=False,
        # A worker that dies is replaced; one that dies again within seconds
        # (a crash loop, such as a bad database URL) stops the server.
        respawn_failed_workers=True,
    ).serve()


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


@ledger_app.command("verify")
def ledger_verify(
    organization: Annotated[
        str | None, typer.Option(help="Check one organization only (default: all).")
    ] = None,
) -> None:
    """Re-fold the journal and check every invariant; exit 1 naming the first violation."""
    from billfold.ledger.verify import verify

    settings = Settings.from_env()
    upgrade(settings.database_url)

    async def main() -> None:
        ctx = AppContext.create(settings)
        try:
            async with ctx.sessions() as session:
                report = await verify(session, organization)
        finally:
            await ctx.engine.dispose()
        if report.violation is not None:
            typer.echo(f"ledger violation: {report.violation}", err=True)
            raise typer.Exit(code=1)
        typer.echo(
            f"ledger verified: {report.entries_checked} entries, "
            f"{report.accounts_checked} accounts, {report.holds_checked} authorizations; "
            "every invariant holds"
        )

    asyncio.run(main())
