"""The database: engine and pool, sessions, schema migrations, and a readiness probe."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.orm import Session, sessionmaker

from nico_api.config import Settings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

_sessions: sessionmaker[Session] | None = None
_engine: Engine | None = None


def engine_for(settings: Settings) -> Engine:
    url = make_url(settings.database_url)
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        if url.database not in (None, "", ":memory:"):
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        # How long a statement waits for a lock held by another writer.
        connect_args["timeout"] = settings.db_statement_timeout
    elif url.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = max(2, math.ceil(settings.db_connect_timeout))
        statement_ms = int(settings.db_statement_timeout * 1000)
        connect_args["options"] = f"-c statement_timeout={statement_ms}"
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        connect_args=connect_args,
    )


def connect(settings: Settings) -> Engine:
    """Create the engine for the settings and make it the one sessions use."""
    global _sessions, _engine
    _engine = engine_for(settings)
    _sessions = sessionmaker(_engine, expire_on_commit=False)
    return _engine


def dispose() -> None:
    """Close the pool's connections (at shutdown, or before a test resets the database)."""
    if _engine is not None:
        _engine.dispose()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` with the migrations: the only way the schema changes."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


@contextmanager
def session() -> Iterator[Session]:
    if _sessions is None:
        raise RuntimeError("nico_api.db.connect() has not been called")
    with _sessions() as s:
        yield s


@contextmanager
def transaction() -> Iterator[Session]:
    """A session whose work is committed at the end, or rolled back whole on any error."""
    with session() as s, s.begin():
        yield s


def ping() -> None:
    """Raise unless the database answers a query now."""
    with session() as s:
        s.execute(text("SELECT 1"))
