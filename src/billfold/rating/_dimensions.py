"""Which of a price's dimensions an event's `data` selects."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from billfold.rating._prices import Price

_MISSING = object()


def _lookup(data: Mapping[str, object], key: str) -> object:
    """The value at a dotted path of `data` ("usage.model"), or `_MISSING`."""
    node: object = data
    for segment in key.split("."):
        if not isinstance(node, Mapping) or segment not in node:
            return _MISSING
        node = node[segment]
    return node


def value_text(value: object) -> str | None:
    """The text a data value is matched as, like PostgreSQL's `data->>key`:
    strings as they are, integers in decimal, booleans as "true"/"false",
    Decimals in plain notation. Anything else (null, floats, lists, objects)
    matches nothing."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal) and value.is_finite():
        return format(value, "f")
    return None


def match_dimension(price: Price, event_data: Mapping[str, object] | None) -> int | None:
    """The index of the dimension that prices an event with this `data`, or
    None for the base price.

    A dimension matches when every one of its keys is present in `data` with
    one of its values. Of the matches, the one with the most keys wins; among
    as many keys, the one listed first wins.
    """
    if event_data is None or not price.dimensions:
        return None
    best: int | None = None
    best_keys = 0
    for index, dimension in enumerate(price.dimensions):
        if len(dimension.match) <= best_keys:
            continue
        for key, values in dimension.match:
            text = value_text(_lookup(event_data, key))
            if text is None or text not in values:
                break
        else:
            best, best_keys = index, len(dimension.match)
    return best
