"""Migrations build the schema from nothing and take it back to nothing on
both backends, and the models match what the migrations build (Alembic's
autogenerate comparison finds no difference)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from billfold import models
from billfold.db.engine import create_sync_engine
from billfold.db.migrate import alembic_config, downgrade, upgrade
from tests.support import empty_database


@pytest.fixture
def empty_url(backend: str, tmp_path: Path) -> Iterator[str]:
    with empty_database(backend, tmp_path) as url:
        yield url


def _tables(database_url: str) -> set[str]:
    engine = create_sync_engine(database_url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _differences(database_url: str) -> list[Any]:
    engine = create_sync_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": True}
            )
            return list(compare_metadata(context, models.Base.metadata))
    finally:
        engine.dispose()


class TestUpgradeDowngrade:
    def test_from_empty_to_head_and_back_to_base(self, empty_url: str) -> None:
        model_tables = set(models.Base.metadata.tables)
        upgrade(empty_url)
        assert model_tables <= _tables(empty_url)
        downgrade(empty_url, "base")
        assert _tables(empty_url) <= {"alembic_version"}
        # And up again: a downgrade leaves nothing behind that blocks it.
        upgrade(empty_url)
        assert model_tables <= _tables(empty_url)

    def test_upgrade_twice_is_a_no_op(self, empty_url: str) -> None:
        upgrade(empty_url)
        upgrade(empty_url)
        assert _differences(empty_url) == []

    def test_one_linear_history(self) -> None:
        scripts = ScriptDirectory.from_config(alembic_config())
        assert len(scripts.get_heads()) == 1
        assert len(scripts.get_bases()) == 1


class TestModelsMatchMigrations:
    def test_autogenerate_finds_no_difference(self, empty_url: str) -> None:
        upgrade(empty_url)
        assert _differences(empty_url) == []
