"""The database engine: its pool sized by the settings, and every connection's options (libpq's
time bounds on PostgreSQL, the write-ahead log on SQLite)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url

from nico_api.config import Settings


def engine_for(settings: Settings) -> Engine:
    url = make_url(settings.database_url)
    connect_args: dict[str, Any] = {}
    pool: dict[str, Any] = {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout,
    }
    if url.get_backend_name() == "sqlite":
        if url.database in (None, "", ":memory:"):
            pool = {}  # one in-memory database per connection: no pool to size
        else:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        # How long a statement waits for a lock held by another writer.
        connect_args["timeout"] = settings.db_statement_timeout
    elif url.get_backend_name() == "postgresql":
        connect_args = postgres_connect_args(settings)
    engine = create_engine(
        url,
        # A server can drop connections; an embedded SQLite file cannot.
        pool_pre_ping=url.get_backend_name() != "sqlite",
        connect_args=connect_args,
        **pool,
    )
    if url.get_backend_name() == "sqlite" and pool:
        event.listen(engine, "connect", _write_ahead_log)
    return engine


def postgres_connect_args(settings: Settings) -> dict[str, Any]:
    """libpq's options for every PostgreSQL connection, thread or event loop: bounded connect
    and statement times, and a connection whose peer vanished (a black hole) failing within
    about the request deadline instead of the kernel's 15 minutes: keepalives while idle, and a
    bound on data left unacknowledged."""
    statement_ms = int(settings.db_statement_timeout * 1000)
    return {
        "connect_timeout": max(2, math.ceil(settings.db_connect_timeout)),
        "options": f"-c statement_timeout={statement_ms}",
        "keepalives": 1,
        "keepalives_idle": max(1, math.ceil(settings.db_request_timeout / 2)),
        "keepalives_interval": 1,
        "keepalives_count": 3,
        "tcp_user_timeout": int(settings.db_request_timeout * 1000),
    }


def _write_ahead_log(dbapi_connection: Any, _record: Any) -> None:
    """SQLite in WAL mode: readers go on while a writer (a large `db load`) holds its lock."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()
