"""FastAPI dependencies shared by every domain's endpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from billfold import limits
from billfold.api.boundary import context_of
from billfold.clock import Clock
from billfold.organizations.service import Principal


def _session(request: Request) -> AsyncSession:
    session = request.state.session
    assert isinstance(session, AsyncSession)
    return session


def _principal(request: Request) -> Principal:
    principal = request.state.principal
    assert isinstance(principal, Principal)
    return principal


def _clock(request: Request) -> Clock:
    return context_of(request).clock


class PageParams:
    def __init__(
        self,
        limit: Annotated[
            int, Query(ge=1, le=limits.page_size_max, description="Items per page")
        ] = limits.page_size_default,
        starting_after: Annotated[
            str | None,
            Query(max_length=64, description="Id of the last item of the previous page"),
        ] = None,
    ) -> None:
        self.limit = limit
        self.starting_after = starting_after


Session = Annotated[AsyncSession, Depends(_session)]
CurrentPrincipal = Annotated[Principal, Depends(_principal)]
CurrentClock = Annotated[Clock, Depends(_clock)]
Pagination = Annotated[PageParams, Depends()]
