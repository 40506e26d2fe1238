"""Response shapes shared across domains."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list, newest first; pass the last `id` as `starting_after` for the next."""

    data: list[T]
    has_more: bool


class Schema(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class RequestSchema(BaseModel):
    """Request bodies refuse unknown fields, so a typo is an error, not a silent no-op."""

    model_config = ConfigDict(extra="forbid")


def page_of(items: list[T], limit: int) -> Page[T]:
    """Repositories fetch `limit + 1` rows; the extra one only says there is more."""
    return Page[T](data=items[:limit], has_more=len(items) > limit)
