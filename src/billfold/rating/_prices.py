"""Price definitions: frozen, exact, checked on construction.

`parse_price` builds these from API JSON and reports the caller's mistakes;
the checks here only catch a program that builds a bad price by hand (they
raise `RatingViolation`, a bug, not a 4xx).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import ClassVar

from billfold.rating._exact import ZERO, require


def _non_negative(value: Decimal, name: str) -> None:
    require(
        isinstance(value, Decimal) and value.is_finite() and value >= 0,
        f"{name} must be a finite Decimal >= 0, not {value!r}",
    )


def _check_bounds(bounds: Sequence[Decimal | None], name: str) -> None:
    require(len(bounds) >= 1, f"{name}: at least one tier")
    require(bounds[-1] is None, f"{name}: the last tier's up_to is None")
    previous = ZERO
    for bound in bounds[:-1]:
        require(bound is not None, f"{name}: only the last tier is unbounded")
        assert bound is not None  # for the type checker; `require` above survives -O
        _non_negative(bound, f"{name} up_to")
        require(bound > previous, f"{name}: up_to must increase from 0, got {bound}")
        previous = bound


@dataclass(frozen=True, slots=True)
class Tier:
    """Units above the previous tier's `up_to` (exclusive) up to this one's
    (inclusive; None on the last tier) at `unit_amount` each, plus
    `flat_amount` once usage reaches the tier."""

    up_to: Decimal | None
    unit_amount: Decimal = ZERO
    flat_amount: Decimal = ZERO

    def __post_init__(self) -> None:
        if self.up_to is not None:
            _non_negative(self.up_to, "up_to")
        _non_negative(self.unit_amount, "unit_amount")
        _non_negative(self.flat_amount, "flat_amount")


@dataclass(frozen=True, slots=True)
class PercentageTier:
    """A graduated-percentage tier: `rate_percent` % of its units, plus
    `flat_amount` once usage reaches the tier."""

    up_to: Decimal | None
    rate_percent: Decimal = ZERO
    flat_amount: Decimal = ZERO

    def __post_init__(self) -> None:
        if self.up_to is not None:
            _non_negative(self.up_to, "up_to")
        _non_negative(self.rate_percent, "rate_percent")
        _non_negative(self.flat_amount, "flat_amount")


@dataclass(frozen=True, slots=True)
class PerUnit:
    """`quantity * unit_amount` (Lago's `standard`)."""

    name: ClassVar[str] = "per_unit"
    unit_amount: Decimal

    def __post_init__(self) -> None:
        _non_negative(self.unit_amount, "unit_amount")


@dataclass(frozen=True, slots=True)
class Graduated:
    """Each tier prices its own units; every tier reached adds its flat fee."""

    name: ClassVar[str] = "graduated"
    tiers: tuple[Tier, ...]

    def __post_init__(self) -> None:
        _check_bounds([tier.up_to for tier in self.tiers], "graduated")


@dataclass(frozen=True, slots=True)
class Volume:
    """All units at the one tier that holds the total, plus its flat fee."""

    name: ClassVar[str] = "volume"
    tiers: tuple[Tier, ...]

    def __post_init__(self) -> None:
        _check_bounds([tier.up_to for tier in self.tiers], "volume")


@dataclass(frozen=True, slots=True)
class Package:
    """`ceil(max(0, quantity - free_units) / package_size) * package_amount`."""

    name: ClassVar[str] = "package"
    package_size: Decimal
    package_amount: Decimal
    free_units: Decimal = ZERO

    def __post_init__(self) -> None:
        _non_negative(self.package_size, "package_size")
        require(self.package_size > 0, "package_size must be > 0")
        _non_negative(self.package_amount, "package_amount")
        _non_negative(self.free_units, "free_units")


@dataclass(frozen=True, slots=True)
class Percentage:
    """`rate_percent` % of the units above `free_units`, plus `fixed_amount`
    for every event that has paid units."""

    name: ClassVar[str] = "percentage"
    rate_percent: Decimal
    fixed_amount: Decimal = ZERO
    free_units: Decimal = ZERO

    def __post_init__(self) -> None:
        _non_negative(self.rate_percent, "rate_percent")
        _non_negative(self.fixed_amount, "fixed_amount")
        _non_negative(self.free_units, "free_units")


@dataclass(frozen=True, slots=True)
class GraduatedPercentage:
    """Graduated, with each tier charging a percentage of its units."""

    name: ClassVar[str] = "graduated_percentage"
    tiers: tuple[PercentageTier, ...]

    def __post_init__(self) -> None:
        _check_bounds([tier.up_to for tier in self.tiers], "graduated_percentage")


@dataclass(frozen=True, slots=True)
class Flat:
    """`amount` per period, whatever the usage (zero included)."""

    name: ClassVar[str] = "flat"
    amount: Decimal

    def __post_init__(self) -> None:
        _non_negative(self.amount, "amount")


Model = PerUnit | Graduated | Volume | Package | Percentage | GraduatedPercentage | Flat

MODELS: dict[str, type[Model]] = {
    model.name: model
    for model in (PerUnit, Graduated, Volume, Package, Percentage, GraduatedPercentage, Flat)
}

# The API fields of each model, in the order they are written out.
MODEL_FIELDS: dict[str, tuple[str, ...]] = {
    name: tuple(f.name for f in fields(model)) for name, model in MODELS.items()
}


def _check_clamp(minimum: Decimal | None, maximum: Decimal | None) -> None:
    if minimum is not None:
        _non_negative(minimum, "min_amount_per_event")
    if maximum is not None:
        _non_negative(maximum, "max_amount_per_event")
    if minimum is not None and maximum is not None:
        require(minimum <= maximum, "min_amount_per_event must not exceed max_amount_per_event")


@dataclass(frozen=True, slots=True)
class Dimension:
    """A variant of a price for events whose `data` matches.

    `match` is sorted by key; each key holds the set of accepted texts (one
    for `{"model": "gpt-4o"}`, several for `{"model": ["a", "b"]}`). `model`
    and the clamps are the dimension's own, already merged with the base
    price's, so a resolved dimension is a whole price.
    """

    match: tuple[tuple[str, frozenset[str]], ...]
    model: Model
    min_amount_per_event: Decimal | None = None
    max_amount_per_event: Decimal | None = None

    def __post_init__(self) -> None:
        require(len(self.match) >= 1, "a dimension matches at least one key")
        keys = [key for key, _ in self.match]
        require(keys == sorted(set(keys)), "dimension match keys are sorted and distinct")
        for key, values in self.match:
            require(isinstance(key, str) and key != "", "dimension keys are non-empty strings")
            require(
                isinstance(values, frozenset)
                and len(values) >= 1
                and all(isinstance(v, str) for v in values),
                f"dimension values of {key!r} are a non-empty frozenset of strings",
            )
        _check_clamp(self.min_amount_per_event, self.max_amount_per_event)


@dataclass(frozen=True, slots=True)
class Price:
    """What rating needs of a price: its model, its dimensions and the
    per-event clamps. The catalog's envelope (`code`, `type`, `meter`,
    `asset`, `billing`) is not rating's and is not kept here."""

    model: Model
    dimensions: tuple[Dimension, ...] = ()
    min_amount_per_event: Decimal | None = None
    max_amount_per_event: Decimal | None = None

    def __post_init__(self) -> None:
        _check_clamp(self.min_amount_per_event, self.max_amount_per_event)
        seen: set[tuple[tuple[str, frozenset[str]], ...]] = set()
        for dimension in self.dimensions:
            require(
                type(dimension.model) is type(self.model),
                "a dimension keeps its price's model",
            )
            require(dimension.match not in seen, "no two dimensions have the same match")
            seen.add(dimension.match)

    @property
    def has_per_event_parts(self) -> bool:
        """True when an event's fee is more than the change of the period's
        price: a per-event fixed fee or a per-event minimum or maximum. Such a
        period is the sum of its events' ratings, not `rate` of its total."""
        variants = [(self.model, self.min_amount_per_event, self.max_amount_per_event)]
        variants += [
            (d.model, d.min_amount_per_event, d.max_amount_per_event) for d in self.dimensions
        ]
        return any(
            (minimum is not None and minimum > 0)
            or maximum is not None
            or (isinstance(model, Percentage) and model.fixed_amount > 0)
            for model, minimum, maximum in variants
        )
