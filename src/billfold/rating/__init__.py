"""Rating: what usage costs. Pure functions, no I/O, Decimal only.

    price = parse_price(json, asset=usd, field="prices.0")
    rating = rate(price, Decimal("1500"), asset=usd, event_data={"model": "gpt-4o"})
    fee = rate_marginal(price, before, after, asset=usd, event_data=data)  # real time

A rating's `amount_minor` is an int of the asset's minor units; its `lines`
break it down (per tier for tiered prices), each exact (`amount`) and in
minor units (`amount_minor`, summing to the rating's). `decimal_text` writes
an exact Decimal as plain text for JSON ("0.000000015", never "1.5E-8").

Arithmetic. Every computation runs in `_exact.EXACT`, a Decimal context of
rating's own (never the thread's), precise enough for the largest inputs the
limits allow, with every rounding signal trapped: an intermediate that would
lose a digit raises rather than rounds. The only rounding is half-up (ties
away from zero) where an exact amount becomes minor units, at the asset's
stored `scale` (not its ISO display exponent: invoices round for display on
their own). No float is accepted (a float quantity is a `TypeError`) or
produced.

Rules. API.md ("Prices") is the contract; where it is silent Billfold follows
Lago (lago-api `app/services/charge_models/*`). Every gap filled and every
departure from Lago:

1. Tiers. `up_to` is lower-exclusive, upper-inclusive; the first tier starts
   at 0 and holds 0; `up_to` strictly rises and only the last is null. There
   are no gaps, so fractional usage needs no rule: Lago's integer-style ranges
   (0-10, 11-20, where 10.5 goes up a tier) cannot be written; Billfold's
   tiers are Lago's "adjacent ranges". A tier's `unit_amount` (`rate_percent`)
   and `flat_amount` default to 0.
2. Graduated (and graduated_percentage): each tier prices its own units; a
   tier's flat fee is charged once usage is above its lower bound (exactly at
   a tier's `up_to` the next tier is not reached; any amount past it is); the
   first tier's flat fee is charged even at zero usage (API.md, as Lago).
   graduated_percentage is graduated with a unit price of `rate_percent/100`
   (Lago: premium; here core).
3. Volume: all units at the one tier whose range holds the total, plus that
   tier's flat fee; zero usage is the first tier's flat fee (as Lago). The
   price of a volume total can fall as it grows, so an event's marginal fee
   can be negative; rating returns it signed (Lago refuses pay-in-advance
   volume charges; the catalog may refuse `real_time` volume prices).
4. Package: `ceil(max(0, quantity - free_units) / package_size) *
   package_amount`; a package is charged from its first unit, after the free
   units. `package_size` and `free_units` may be fractional (Lago: integers).
5. Percentage: `rate_percent` % of the units above `free_units`, plus
   `fixed_amount` for each event that has paid units, i.e. whose period total
   after it is above both the total before it and `free_units`. `free_units`
   is an amount of the metered value (Lago's
   `free_units_per_total_aggregation`); Lago's count of free events
   (`free_units_per_events`) is not offered. Lago also charges the fixed fee
   on an event that lands exactly on the free amount and on zero-value events
   once the total is above zero; Billfold charges it only to events with paid
   units. `rate_percent` may exceed 100 (cost-plus pricing).
6. Flat: `amount` per period whatever the usage, zero included; in real time
   the period's first event pays it.
7. Per-event minimum and maximum: `min_amount_per_event` and
   `max_amount_per_event`, on any model and any dimension (Lago:
   `per_transaction_min_amount`/`_max_amount`, percentage only, premium; the
   names say "per event" because Lago's `min_amount_cents` is a per-period
   minimum). They clamp an event's fee, fixed fee included, in minor units,
   and only a positive fee: an event that costs nothing (zero usage, within
   free units, inside a package already paid) stays free, as Lago's free
   events do; a negative volume fee is left alone. The clamp is a line of its
   own (`minimum`, `maximum`).
8. Real time (`rate_marginal`): an event's fee is price(after) -
   price(before) with each total rounded to minor units first, so a period's
   events sum exactly to the price of its total (Lago rounds each event's
   difference, which drifts). `before=None` marks the period's first event:
   no event yet costs nothing, so that event also pays the price at zero
   usage (Lago excludes the first tier's flat fee from the "before" side of
   the first pay-in-advance event the same way). Per-event parts (rule 5's
   fixed fee, rule 7's clamps) are added to each event, so a period of a
   price that has them (`Price.has_per_event_parts`) costs the sum of its
   events' fees rather than `rate` of its total.
9. `rate(price, q)` is `rate_marginal(price, None, q)`: a period of one event.
10. Dimensions: a list of `{"match": {key: value or [values]}, ...overrides}`.
    A key is a dotted path into the event's `data`; it matches when the value
    there, as text (strings as they are, integers in decimal, booleans
    "true"/"false", like PostgreSQL's `->>`), is one of the dimension's
    values; nulls, floats, lists and objects match nothing. A dimension
    applies when all its keys match; the most keys wins, and among as many
    keys the dimension listed first wins. Two dimensions with the same match
    are refused (the second could never apply). An event matching none gets
    the base price. A dimension may override any field of its price's model
    (`tiers` are replaced whole) and the per-event clamps (null lifts one),
    never the model. On a graduated or volume price a dimension's
    `unit_amount` (`rate_percent` on graduated_percentage) sets that unit
    price in every tier, keeping the tiers' bounds and flat fees: API.md's
    own example overrides `unit_amount` on a graduated price. It may not be
    given with `tiers`. A per_unit price cannot take `tiers` in a dimension
    (graduated or volume would be a guess). Usage accumulates per dimension, as Lago's charge
    filters do: the caller keeps one running total per price and dimension
    (`Rating.dimension`) for `before`/`after`.
11. Amounts and rates. Money amounts (`flat_amount`, `package_amount`,
    `fixed_amount`, `amount`, the clamps) are amounts of the price's asset
    and may not have more decimals than its scale (`invalid_amount`, as
    API.md). A `unit_amount` or `rate_percent` is a rate, not an amount: it
    may be finer than the scale (up to `price_unit_amount_decimals_max`
    decimals), as Lago's are, because only the rated total is rounded.
    Amounts and rates are decimal strings; quantities (`up_to`,
    `package_size`, `free_units`) may also be JSON integers.
12. Bounds. A quantity is at most `rating_quantity_max` with at most
    `rating_quantity_decimals_max` decimals, never negative
    (`invalid_quantity`); a rated total above `amount_minor_max` is
    `LimitExceeded` (`amount_too_large`).
13. Lines. A line's `amount_minor` is the difference of the rounded running
    total of the lines, so the lines sum to the rating exactly; a marginal
    rating's lines are the differences of the two totals' lines (a volume
    event that changes tier shows the old tier negative, the new positive).
"""

from billfold.rating._dimensions import match_dimension
from billfold.rating._exact import RatingViolation
from billfold.rating._exact import text as decimal_text
from billfold.rating._parse import RATING_FIELDS, dump_price, parse_price
from billfold.rating._prices import (
    Dimension,
    Flat,
    Graduated,
    GraduatedPercentage,
    Model,
    Package,
    Percentage,
    PercentageTier,
    PerUnit,
    Price,
    Tier,
    Volume,
)
from billfold.rating._rate import Line, LineKind, Rating, rate, rate_marginal

__all__ = [
    "RATING_FIELDS",
    "Dimension",
    "Flat",
    "Graduated",
    "GraduatedPercentage",
    "Line",
    "LineKind",
    "Model",
    "Package",
    "PerUnit",
    "Percentage",
    "PercentageTier",
    "Price",
    "Rating",
    "RatingViolation",
    "Tier",
    "Volume",
    "decimal_text",
    "dump_price",
    "match_dimension",
    "parse_price",
    "rate",
    "rate_marginal",
]
