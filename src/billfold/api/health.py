"""Liveness, readiness and metrics: unauthenticated, for load balancers and Prometheus."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from billfold.api.boundary import context_of
from billfold.api.problems import error_responses, problem_response, request_id_of

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@router.get("/readyz", responses=error_responses(503))
async def readyz(request: Request) -> Response:
    """The process can reach its database."""
    ctx = context_of(request)
    try:
        async with ctx.engine.connect() as connection:
            await connection.execute(sa.text("SELECT 1"))
    except Exception as exc:  # any failure to reach the database means not ready
        return problem_response(
            503,
            "database_unavailable",
            "Not ready",
            f"The database is not reachable: {type(exc).__name__}.",
            request_id=request_id_of(request),
        )
    return Response(content='{"status":"ready"}', media_type="application/json")


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(content=generate_latest(), media_type=CONTENT_TYPE_LATEST)
