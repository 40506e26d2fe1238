"""One API call, described without doing it; the clients send it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

#: Every (method, path template) the SDK covers; a test holds it to the API.
ROUTES: set[tuple[str, str]] = set()

_F = TypeVar("_F", bound=Callable[..., Any])


def route(method: str, template: str) -> Callable[[_F], _F]:
    ROUTES.add((method, template))

    def mark(function: _F) -> _F:
        return function

    return mark


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    path: str
    json: Any = None
    params: Mapping[str, str | int] | None = None
    idempotency_key: str | None = None
    #: The answer's bytes rather than its JSON (a PDF).
    raw: bool = False


def path(template: str, *values: str | int) -> str:
    """`template` with its `{…}` holes filled in order, each value quoted
    (`ext:` customer ids keep their colon)."""
    parts = template.split("{")
    out = [parts[0]]
    if len(parts) - 1 != len(values):
        raise ValueError(f"{template} takes {len(parts) - 1} values")
    for part, value in zip(parts[1:], values, strict=True):
        _, _, rest = part.partition("}")
        out.append(quote(str(value), safe=":") + rest)
    return "".join(out)


def body(**fields: Any) -> dict[str, Any]:
    """A JSON body of the fields that were given (None means not sent)."""
    return {name: value for name, value in fields.items() if value is not None}


def query(**fields: str | int | None) -> dict[str, str | int]:
    return {name: value for name, value in fields.items() if value is not None}
