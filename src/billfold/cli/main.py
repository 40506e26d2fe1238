"""The `billfold` command."""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import signal
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Annotated

import typer

from billfold import limits
from billfold.api.context import AppContext
from billfold.config import Settings
from billfold.db.migrate import upgrade
from billfold.observability import configure_logging, logging_dict_config
from billfold.organizations import service as organizations

logger = logging.getLogger("billfold.cli")

app = typer.Typer(
    help="Billfold: real-time billing for AI and API products.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
org_app = typer.Typer(help="Organizations (tenants).", no_args_is_help=True)
app.add_typer(org_app, name="org")
ledger_app = typer.Typer(help="The ledger.", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")
billing_app = typer.Typer(help="Subscriptions billing.", no_args_is_help=True)
app.add_typer(billing_app, name="billing")
prices_app = typer.Typer(help="LLM list-price tables.", no_args_is_help=True)
app.add_typer(prices_app, name="prices")
llm_app = typer.Typer(help="LLM usage and cost.", no_args_is_help=True)
app.add_typer(llm_app, name="llm")


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
def gateway(
    upstream_openai: Annotated[
        str | None, typer.Option(help="The OpenAI API's base URL (key from OPENAI_API_KEY).")
    ] = None,
    upstream_anthropic: Annotated[
        str | None,
        typer.Option(help="The Anthropic API's base URL (key from ANTHROPIC_API_KEY)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8090,
    workers: Annotated[int, typer.Option(min=1, help="Server processes.")] = 1,
    hold_amount: Annotated[
        str | None,
        typer.Option(help="Hold this amount per call instead of the rated worst case."),
    ] = None,
    on_provider_error: Annotated[
        str, typer.Option(help="'release' the hold on a provider error, or 'charge_input'.")
    ] = "release",
    lookup_ttl: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds a key's customer and prices, once read, serve later calls "
            "(0: read them for every call).",
        ),
    ] = limits.gateway_lookup_ttl_s,
) -> None:
    """Serve the OpenAI- and Anthropic-compatible gateway: every call held and settled."""
    from billfold.gateway.billing import settle_in_own_process

    if upstream_openai is None and upstream_anthropic is None:
        raise typer.BadParameter("give --upstream-openai, --upstream-anthropic or both")
    if on_provider_error not in ("release", "charge_input"):
        raise typer.BadParameter("--on-provider-error is 'release' or 'charge_input'")
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    upgrade(settings.database_url)
    # Server processes build the gateway from the environment.
    os.environ["BILLFOLD_DATABASE_URL"] = settings.database_url
    os.environ["BILLFOLD_GATEWAY_UPSTREAM_OPENAI"] = upstream_openai or ""
    os.environ["BILLFOLD_GATEWAY_UPSTREAM_ANTHROPIC"] = upstream_anthropic or ""
    os.environ["BILLFOLD_GATEWAY_HOLD_AMOUNT"] = hold_amount or ""
    os.environ["BILLFOLD_GATEWAY_ON_PROVIDER_ERROR"] = on_provider_error
    os.environ["BILLFOLD_GATEWAY_LOOKUP_TTL_S"] = str(lookup_ttl)
    os.environ["BILLFOLD_GATEWAY_SETTLER_PROCESS"] = "1"
    # Ingesting the calls' usage events costs CPU that, in a server process,
    # would stall the calls in flight: one process of its own does it.
    spawning = multiprocessing.get_context("spawn")
    ready, told = spawning.Pipe(duplex=False)
    settler = spawning.Process(
        target=settle_in_own_process, args=(os.getpid(), told), name="billfold-settler"
    )
    settler.start()
    told.close()
    # Until it is ready a SIGTERM would kill it before it could ingest what is queued.
    if not _settler_ready(ready, settler):
        logger.error("the settler process did not start; server processes settle stale calls")
    ready.close()
    try:
        _serve_gateway(host, port, workers, settings.log_level)
    finally:
        # After the servers: it ingests what they queued, then exits.
        settler.terminate()
        settler.join(limits.gateway_settler_stop_s)
        if settler.exitcode is None:
            settler.kill()
            settler.join()


def _settler_ready(ready: Connection, settler: BaseProcess) -> bool:
    deadline = time.monotonic() + limits.gateway_settler_start_s
    while time.monotonic() < deadline:
        if ready.poll(0.1):
            try:
                return bool(ready.recv())
            except EOFError:  # it closed its end unready: it died
                return False
        if not settler.is_alive():
            return False
    return False


def _serve_gateway(host: str, port: int, workers: int, log_level: str) -> None:
    # uvicorn, where `serve` runs granian: a gateway call is a latency, not a
    # throughput. uvicorn does the whole exchange on the process's event
    # loop; granian hands the request body and every response chunk between
    # its Rust threads and Python. Two gateways on one database, calls
    # alternating between them (bench/gateway_latency.py's calls): uvicorn
    # answered 0.4-0.55 ms sooner at p50, streamed and not.
    import uvicorn

    # uvicorn, stopped by a signal, raises it again once it has stopped, for
    # the handler it found: SIGTERM's default would end this process there,
    # before `gateway` has stopped its settler. This one ends it through that.
    previous = signal.signal(signal.SIGTERM, _stopped)
    try:
        uvicorn.run(
            "billfold.gateway.asgi:app",
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http="httptools",
            ws="none",
            lifespan="on",
            log_config=logging_dict_config(log_level),
            log_level=log_level.lower(),
            access_log=False,
            server_header=False,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopped(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)  # asked to stop, and stopped


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


@prices_app.command("import")
def prices_import(
    file: Annotated[str, typer.Argument(help="A table from scripts/llm_prices_snapshot.py.")],
    effective_from: Annotated[
        str | None, typer.Option(help="RFC 3339 instant the table applies from (default now).")
    ] = None,
) -> None:
    """Import a list-price table as a new version; earlier costs keep theirs."""
    from pathlib import Path

    from billfold.assets.service import parse_instant
    from billfold.costs import service as costs
    from billfold.errors import BillfoldError

    settings = Settings.from_env()
    upgrade(settings.database_url)
    text = Path(file).read_text(encoding="utf-8")

    async def main() -> str:
        ctx = AppContext.create(settings)
        try:
            start = (
                None
                if effective_from is None
                else parse_instant(effective_from, field="effective_from")
            )
            async with ctx.sessions() as session:
                row = await costs.import_price_table(session, ctx.clock, text, effective_from=start)
                await session.commit()
            since = row.effective_from.isoformat()
            return f"imported price table {row.version}, in force from {since}"
        finally:
            await ctx.engine.dispose()

    try:
        typer.echo(asyncio.run(main()))
    except BillfoldError as exc:
        typer.echo(f"{exc.code}: {exc.detail}", err=True)
        raise typer.Exit(code=1) from None


@llm_app.command("cost")
def llm_cost(
    provider: Annotated[str, typer.Option(help="openai, anthropic, google or mistral.")],
    model: Annotated[str, typer.Option(help="The model as the provider reports it.")],
    usage: Annotated[str, typer.Option(help="The provider's usage object, as JSON.")],
    api: Annotated[str | None, typer.Option(help="chat, responses, embeddings, messages…")] = None,
    processing: Annotated[str | None, typer.Option(help="sync (default) or batch.")] = None,
    service_tier: Annotated[str | None, typer.Option(help="flex, priority…")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Price one model call at list price (the newest table) and print the breakdown."""
    from datetime import UTC, datetime

    from billfold.assets.builtin import BUILTIN_ASSETS
    from billfold.costs import service as costs
    from billfold.errors import BillfoldError
    from billfold.llmcost import LlmCostError, price_usage
    from billfold.metering import values

    settings = Settings.from_env()
    upgrade(settings.database_url)
    try:
        raw_usage = values.loads(usage)
    except ValueError:
        typer.echo("--usage is not JSON.", err=True)
        raise typer.Exit(code=2) from None

    async def main() -> dict[str, object]:
        ctx = AppContext.create(settings)
        try:
            async with ctx.sessions() as session:
                at = datetime.now(UTC)
                table = await costs.table_at(session, at)
            priced = price_usage(
                table,
                provider,
                model,
                raw_usage,
                at=at,
                api=api,
                processing=processing,
                service_tier=service_tier,
            )
            return costs.priced_json(priced, BUILTIN_ASSETS[priced.currency])
        finally:
            await ctx.engine.dispose()

    try:
        result = asyncio.run(main())
    except (LlmCostError, BillfoldError) as exc:
        typer.echo(f"{exc.code}: {exc.detail}", err=True)
        raise typer.Exit(code=1) from None
    if as_json:
        typer.echo(json.dumps(result))
        return
    cost = result["cost"]
    assert isinstance(cost, dict)
    typer.echo(f"{provider} {model}: {cost['amount']} {cost['asset']}")
    lines = result["breakdown"]
    assert isinstance(lines, list)
    for line in lines:
        typer.echo(
            f"  {line['bucket']:<15} {line['tokens']:>12} × {line['unit_price']:>10} "
            f"per {line['unit']:<9} = {line['amount']}"
        )
    typer.echo(f"price table {result['price_table_version']}")


@billing_app.command("run")
def billing_run(
    at: Annotated[
        str | None,
        typer.Option(help="Close every period that ended at or before this RFC 3339 time."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Make the invoices of every period ended by TIME (default now), and finalize
    drafts whose grace period has passed. Running it twice makes nothing twice."""
    from billfold.assets.service import parse_instant
    from billfold.errors import BillfoldError
    from billfold.invoicing.service import run_billing

    settings = Settings.from_env()
    configure_logging(settings.log_level)
    upgrade(settings.database_url)
    try:
        until = None if at is None else parse_instant(at, field="at")
    except BillfoldError as exc:
        typer.echo(f"--at: {exc.detail}", err=True)
        raise typer.Exit(2) from None

    async def main() -> dict[str, int]:
        ctx = AppContext.create(settings)
        try:
            report = await run_billing(ctx.sessions, ctx.clock, until)
        finally:
            await ctx.engine.dispose()
        return {
            "subscriptions": report.subscriptions,
            "invoices": report.invoices,
            "finalized": report.finalized,
            "failed": report.failed,
        }

    report = asyncio.run(main())
    if as_json:
        typer.echo(json.dumps(report))
    else:
        typer.echo(
            f"billed {report['subscriptions']} subscriptions: {report['invoices']} invoices, "
            f"{report['finalized']} finalized, {report['failed']} failed"
        )
    if report["failed"]:
        raise typer.Exit(1)
