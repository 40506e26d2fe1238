"""Many rows in one INSERT whose text does not depend on how many there are.

A batch of the wallet writer or of ingest writes tens to thousands of rows at
once. Through the ORM's bulk insert or an executemany, every row costs Python
work in SQLAlchemy and the driver; a multi-row VALUES list costs a compile
per distinct row count. On PostgreSQL `insert_rows` instead sends the rows as
one JSON array and lets the server unpack it (`jsonb_array_elements`: jsonb
is parsed once, where every `->>` on a `json` value parses it again), so the
statement is compiled once, prepared once by psycopg, and a row costs a
`json.dumps` of a list. On SQLite (embedded, one writer, no round trips) it
is SQLAlchemy's executemany, which batches rows into multi-row INSERTs within
SQLite's limit on parameters.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.db.base import UTCDateTime
from billfold.db.engine import dialect_of, upsert_insert
from billfold.db.pipeline import Statement

_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


async def insert_rows(
    session: AsyncSession,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    conflict_do_nothing: Sequence[str] = (),
    returning: str | None = None,
) -> list[Any]:
    """Insert `rows` (all with the same keys, inserted in the order given).

    `conflict_do_nothing` names the unique columns whose conflict skips a row;
    `returning` names one column to return for each row inserted.
    """
    if not rows:
        return []
    columns = tuple(rows[0])
    for name in columns:
        table.c[name]  # an unknown column raises KeyError here, on either backend
    if dialect_of(session) != "postgresql":
        statement = upsert_insert(session, table)
        if conflict_do_nothing:
            statement = statement.on_conflict_do_nothing(index_elements=list(conflict_do_nothing))
        if returning is None:
            await session.execute(statement, list(rows))
            return []
        statement = statement.returning(table.c[returning], sort_by_parameter_order=True)
        return list(await session.scalars(statement, list(rows)))
    statement = pg_insert(table, rows, conflict_do_nothing=conflict_do_nothing, returning=returning)
    result = await session.execute(statement.text, dict(statement.params))
    return [] if returning is None else list(result.scalars())


def pg_insert(
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    conflict_do_nothing: Sequence[str] = (),
    returning: str | None = None,
) -> Statement:
    """PostgreSQL's `insert_rows` as a statement to run (with others, say:
    `billfold.db.pipeline`)."""
    columns = tuple(rows[0])
    text = _pg_statement(table, columns, tuple(conflict_do_nothing), returning)
    encode = [_json_encoder(table.c[name].type, {}) for name in columns]
    payload = json.dumps(
        [
            [convert(row[name]) for name, convert in zip(columns, encode, strict=True)]
            for row in rows
        ]
    )
    return Statement(text, {"rows": payload})


@cache
def _pg_statement(
    table: sa.Table, columns: tuple[str, ...], conflict: tuple[str, ...], returning: str | None
) -> sa.TextClause | sa.TextualSelect:
    quote = _PG.identifier_preparer.quote
    picks = [
        f"CAST(r.row->>{position} AS {table.c[name].type.compile(dialect=_PG)})"
        for position, name in enumerate(columns)
    ]
    # Every name is a column of the table's metadata (looked up above and
    # below, so an unknown one raises) and quoted; the values travel as the
    # one bound parameter.
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(map(quote, columns))}) "  # noqa: S608
        f"SELECT {', '.join(picks)} FROM jsonb_array_elements(CAST(:rows AS jsonb)) "
        "WITH ORDINALITY AS r(row, n) ORDER BY r.n"
    )
    if conflict:
        sql += f" ON CONFLICT ({', '.join(quote(table.c[name].name) for name in conflict)})"
        sql += " DO NOTHING"
    if returning is not None:
        sql += f" RETURNING {quote(table.c[returning].name)}"
        return sa.text(sql).columns(table.c[returning])
    return sa.text(sql)


def _json_encoder(
    column_type: sa.types.TypeEngine[Any], spelled: dict[datetime, str]
) -> Callable[[Any], Any]:
    if isinstance(column_type, sa.JSON):
        # Sent as its text, as the ORM would send it: a `json` column keeps
        # that text as given (jsonb would reorder its keys).
        return _json_text
    if isinstance(column_type, sa.DateTime | UTCDateTime):

        def instant(value: datetime | None) -> str | None:
            # A batch's rows share a few instants (now, a period's bounds):
            # each is spelled once.
            if value is None:
                return None
            text = spelled.get(value)
            if text is None:
                text = spelled[value] = _json_value(value)
            return text

        return instant
    return _json_value


def _json_text(value: Any) -> str:
    return json.dumps(value)  # None too, as JSON null: SQLAlchemy's JSON does the same


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        # As UTCDateTime does: a naive datetime names no instant.
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()  # bytea's hex input format
    if isinstance(value, Decimal):
        return str(value)
    return value
