"""The database engine and the sessions handlers work in."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from nico_api.models import Base

_sessions: sessionmaker[Session] | None = None


def connect(database_url: str) -> Engine:
    """Create the engine for a database URL and make it the one sessions use."""
    global _sessions
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, pool_pre_ping=True)
    _sessions = sessionmaker(engine, expire_on_commit=False)
    return engine


def create_schema(engine: Engine) -> None:
    Base.metadata.create_all(engine)


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
