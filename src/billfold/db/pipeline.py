"""Several statements to PostgreSQL in one round trip (psycopg's pipeline mode).

The wallet writer's batch writes its journal entries, postings and counter
moves with three statements, of which only the last answers anything the
batch reads. Each sent through SQLAlchemy costs 0.15–0.25 ms of Python and
waits a round trip of its own. Sent together on the transaction's own
psycopg connection, they wait one round trip and cost a fraction of the
Python. The statements run in order in the session's transaction; an error
in one aborts the transaction as it would have one by one, and is raised
once all were sent. SQLite (in process, no round trips) runs them through
the session one by one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import psycopg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.db.engine import dialect_of

Text = sa.TextClause | sa.TextualSelect | sa.Select[Any]
_compiled: dict[Text, str] = {}


@dataclass(frozen=True, slots=True)
class Statement:
    """A statement (textual, or a Core select of columns, with named
    parameters bound as given) and its values."""

    text: Text
    params: Mapping[str, Any]


async def run_together(
    session: AsyncSession, statements: Sequence[Statement]
) -> list[list[tuple[Any, ...]]]:
    """Run `statements` in order in the session's transaction; the rows each
    returned ([] for one that returns none)."""
    if dialect_of(session) != "postgresql":
        answers: list[list[tuple[Any, ...]]] = []
        for statement in statements:
            result = cast(
                sa.CursorResult[Any],
                await session.execute(statement.text, dict(statement.params)),
            )
            answers.append([tuple(row) for row in result] if result.returns_rows else [])
        return answers
    connection = await session.connection()
    driver = (await connection.get_raw_connection()).driver_connection
    assert driver is not None
    texts = [_sql(statement.text, connection) for statement in statements]
    cursors = []
    try:
        if len(statements) == 1:
            # Alone it waits one round trip anyway; the pipeline's own
            # bookkeeping (its sync, its result queue) would be pure cost.
            cursor = driver.cursor()
            await cursor.execute(texts[0], statements[0].params)
            cursors.append(cursor)
        else:
            async with driver.pipeline():
                for text, statement in zip(texts, statements, strict=True):
                    cursor = driver.cursor()
                    await cursor.execute(text, statement.params)
                    cursors.append(cursor)
    except psycopg.Error as exc:
        # As SQLAlchemy raises it for a statement it runs (IntegrityError…);
        # the error surfaced at the end, so every statement is named.
        raise sa.exc.DBAPIError.instance("; ".join(texts), None, exc, psycopg.Error) from exc
    answers = []
    for cursor in cursors:
        answers.append(list(await cursor.fetchall()) if cursor.description else [])
        await cursor.close()
    return answers


def _sql(text: Text, connection: Any) -> str:
    """The statement as psycopg takes it (`%(name)s` placeholders), compiled once."""
    sql = _compiled.get(text)
    if sql is None:
        sql = _compiled[text] = str(text.compile(dialect=connection.dialect))
    return sql
