"""Alembic, driven from code: `billfold migrate`, start-up, and tests."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from billfold.db.engine import create_sync_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    engine = create_sync_engine(database_url)
    try:
        with engine.connect() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            connection.commit()
    finally:
        engine.dispose()


def downgrade(database_url: str, revision: str) -> None:
    engine = create_sync_engine(database_url)
    try:
        with engine.connect() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.downgrade(config, revision)
            connection.commit()
    finally:
        engine.dispose()
