"""One application's database: its engine, sessions and connections, the request path's reads
(nico_api.storage.reads), recounts, and a readiness probe. The engine's options are in
nico_api.storage.engine, the migrations in nico_api.storage.migrate."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, Executable, text
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from nico_api.config import Settings
from nico_api.storage import queries
from nico_api.storage.engine import engine_for, postgres_connect_args
from nico_api.storage.migrate import MIGRATIONS, upgrade, without_statement_limit
from nico_api.storage.reads import LocalReads, LockedError, PooledReads, RequestLimits

if TYPE_CHECKING:
    from nico_api.metrics import ServiceMetrics

__all__ = [
    "MIGRATIONS",
    "LocalReads",
    "LockedError",
    "PoolTimeoutError",
    "PooledReads",
    "Storage",
    "engine_for",
    "postgres_connect_args",
    "upgrade",
    "without_statement_limit",
]

T = TypeVar("T")


class Storage:
    """One application's database: its engine and pool, its sessions, and how many of its
    requests may use the database at once."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        if metrics is not None:
            metrics.db_capacity.set(settings.db_capacity)
        self.engine = engine_for(settings)
        postgres = self.engine.dialect.name == "postgresql"
        # Reads alone need no transaction: on PostgreSQL, no BEGIN and ROLLBACK round trips.
        self._reader = (
            self.engine.execution_options(isolation_level="AUTOCOMMIT") if postgres else self.engine
        )
        # The request path's reads need no worker thread: PostgreSQL's driver is asynchronous,
        # and a file's point read costs less than the round trip to a thread.
        self.pooled = PooledReads(settings, self.engine) if postgres else None
        self.local = LocalReads(self.engine) if self.engine.dialect.name == "sqlite" else None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.limits = RequestLimits(settings, metrics)

    async def run_in_thread(self, work: Callable[..., T], *args: Any) -> T:
        """Run blocking database work in a worker thread, in the request's turn."""
        async with self.limits.turn():
            # The event loop's own thread pool: asyncio's hand-over costs less than anyio's.
            loop = asyncio.get_running_loop()
            return await self.limits.until_deadline(
                loop.run_in_executor(None, functools.partial(work, *args))
            )

    async def read_row(self, statement: Executable, params: dict[str, Any]) -> Any:
        """The first row of a read (None if it has none). On SQLite on the event loop at once,
        unless another connection holds a lock it would wait for (then in a worker thread); on
        PostgreSQL through the event loop's pool, in the request's turn, cut off at its
        deadline."""
        if self.local is not None:
            try:
                return self.local.row(statement, params)
            except LockedError:
                pass
        elif self.pooled is not None:
            async with self.limits.turn():
                # A read cut off at the deadline is cancelled by the driver (waiting on the
                # server if it must) after the request is answered.
                return await self.limits.until_deadline(
                    asyncio.get_running_loop().create_task(self.pooled.row(statement, params))
                )
        return await self.run_in_thread(self.first_row, statement, params)

    def first_row(self, statement: Executable, params: dict[str, Any]) -> Any:
        """The first row of a read (None if it has none), in the calling thread."""
        with self.reading() as c:
            return c.execute(statement, params).first()

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A plain connection, for the request path's Core statements."""
        with self.engine.connect() as c:
            yield c

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection for reads alone, outside a transaction: on PostgreSQL no BEGIN and
        ROLLBACK round trips around them (each statement sees its own snapshot, as in READ
        COMMITTED); SQLite's driver begins no transaction for a read anyway."""
        with self._reader.connect() as c:
            yield c

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as s:
            yield s

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work is committed at the end, or rolled back whole on any error."""
        with self.session() as s, s.begin():
            yield s

    def upgrade(self, revision: str = "head") -> None:
        upgrade(self.engine, revision)

    def recount(self) -> int:
        """Count the list totals afresh from the stored tasks; the number of counts written."""
        with self.transaction() as s:
            connection = s.connection()
            without_statement_limit(connection)
            if connection.dialect.name == "postgresql":
                # Writers finish first (their changes folded), and none start until this commits.
                connection.execute(
                    text("LOCK TABLE task, task_component IN SHARE ROW EXCLUSIVE MODE")
                )
            for statement in queries.RECOUNT:
                connection.execute(statement)
            return connection.scalar(queries.COUNTS) or 0

    def ping(self) -> None:
        """Readiness: raise unless the database answers a query now."""
        with self.connection() as c:
            c.execute(text("SELECT 1"))

    async def close_reads(self) -> None:
        """Close this event loop's own connections, at the app's shutdown."""
        if self.pooled is not None:
            await self.pooled.close()
        if self.local is not None:
            self.local.close()

    def dispose(self) -> None:
        """Close the pool's connections (at shutdown, or before the database is replaced)."""
        self.engine.dispose()
        if self.local is not None:
            self.local.dispose()
