"""FastAPI dependencies shared by every domain's endpoints.

Every one is `async def`: FastAPI runs a plain `def` dependency (or a class)
in its thread pool, a thread hop per dependency per request for what is a
dictionary lookup.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from billfold import limits
from billfold.api.boundary import context_of
from billfold.clock import Clock
from billfold.organizations.service import Principal


async def _session(request: Request) -> AsyncSession:
    session = request.state.session
    assert isinstance(session, AsyncSession)
    return session


async def _principal(request: Request) -> Principal:
    principal = request.state.principal
    assert isinstance(principal, Principal)
    return principal


async def _clock(request: Request) -> Clock:
    return context_of(request).clock


class PageParams:
    def __init__(self, limit: int, starting_after: str | None) -> None:
        self.limit = limit
        self.starting_after = starting_after


async def _page(
    limit: Annotated[
        int, Query(ge=1, le=limits.page_size_max, description="Items per page")
    ] = limits.page_size_default,
    starting_after: Annotated[
        str | None,
        Query(max_length=64, description="Id of the last item of the previous page"),
    ] = None,
) -> PageParams:
    return PageParams(limit, starting_after)


Session = Annotated[AsyncSession, Depends(_session)]
CurrentPrincipal = Annotated[Principal, Depends(_principal)]
CurrentClock = Annotated[Clock, Depends(_clock)]
Pagination = Annotated[PageParams, Depends(_page)]
