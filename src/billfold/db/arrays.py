"""A list of values as a table to join, from one PostgreSQL array parameter.

`column IN (…)` with one bound parameter per value compiles a new statement
for every length, and a request of ingest names hundreds of customers,
wallets and accounts: SQLAlchemy compiles and psycopg converts each such
statement anew (tens of microseconds per value, in the server's Python). One
array parameter keeps the text constant, so it is compiled and prepared once.

Joined, not `column = ANY(:array)`: once psycopg prepares the statement,
PostgreSQL may switch to a generic plan in which ANY over a parameter is a
linear search of the array for every row it scans (~10 ms for 600 ids over a
few thousand rows, where the join stays under 2 ms whatever the plan).
"""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.selectable import TableValuedAlias


def unnest_text(name: str, values: Collection[str]) -> TableValuedAlias:
    """`unnest(:name) AS …(value)` over the distinct `values`, for PostgreSQL
    only: join its `value` column to the column to match. Distinct, so the
    join never repeats a row."""
    array = sa.bindparam(name, sorted(set(values)), type_=postgresql.ARRAY(sa.Text()))
    return sa.func.unnest(array).table_valued("value").render_derived()


def text_array(name: str) -> TableValuedAlias:
    """`unnest_text` whose array is given when the statement runs (`{name:
    sorted(set(values))}`), for a statement built once and reused: building
    and hashing a SQLAlchemy statement costs more CPU than running it."""
    array = sa.bindparam(name, type_=postgresql.ARRAY(sa.Text()))
    return sa.func.unnest(array).table_valued("value").render_derived()
