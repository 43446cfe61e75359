"""Schema migrations: the only way the schema changes, with Alembic."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, Engine, text

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` with the migrations."""
    # Loaded here: only the commands that change the schema need Alembic.
    from alembic import command
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        without_statement_limit(connection)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def without_statement_limit(connection: Connection) -> None:
    """Migrations, loads and recounts read whole tables: the per-request statement limit is
    lifted."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SET LOCAL statement_timeout = 0"))
