"""The shape of an event's `costs` array, checked at ingest (no I/O, so metering can import it)."""

from __future__ import annotations

from typing import Any

from billfold import limits

_KEYS = {"vendor", "amount", "asset", "category", "id"}
_LENGTHS = {
    "vendor": limits.vendor_code_length_max,
    "amount": limits.amount_string_length_max,
    "asset": 20,
    "category": limits.cost_category_length_max,
    "id": limits.cost_id_length_max,
}


def costs_problem(costs: Any) -> tuple[str, str] | None:
    """(field, message) for the first thing wrong with `costs`, or None.

    Each cost is `{vendor, amount, asset, category?, id?}` with string values;
    amounts are checked against their asset later, when the cost is recorded.
    """
    if not isinstance(costs, list):
        return "costs", "costs is a list of {vendor, amount, asset, category?, id?}."
    if len(costs) > limits.costs_per_event_max:
        return "costs", f"An event carries at most {limits.costs_per_event_max} costs."
    ids: set[str] = set()
    for index, cost in enumerate(costs):
        where = f"costs[{index}]"
        if not isinstance(cost, dict):
            return where, f"{where} is an object {{vendor, amount, asset, category?, id?}}."
        extra = set(cost) - _KEYS
        if extra:
            return f"{where}.{sorted(extra)[0]}", f"{where} has an unknown field."
        for name in ("vendor", "amount", "asset"):
            if name not in cost:
                return f"{where}.{name}", f"{where}.{name} is required."
        for name, value in cost.items():
            if not isinstance(value, str) or not value or len(value) > _LENGTHS[name]:
                return (
                    f"{where}.{name}",
                    f"{where}.{name} is a string of 1 to {_LENGTHS[name]} characters"
                    + (
                        ' (amounts are decimal strings such as "0.0125").'
                        if name == "amount"
                        else "."
                    ),
                )
        cost_id = cost.get("id")
        if cost_id is not None:
            if cost_id in ids:
                return f"{where}.id", "Two costs of one event share an id."
            ids.add(cost_id)
    return None
