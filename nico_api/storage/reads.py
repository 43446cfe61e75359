"""The request path's database work: how many requests may use the database at once, the
deadline of each, and the reads made on the event loop (PostgreSQL through psycopg_pool's
asynchronous pool, an SQLite file through a connection of the loop's own)."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg.rows import namedtuple_row
from psycopg.types.string import TextLoader
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from sqlalchemy import Connection, Engine, Executable, create_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import NullPool

from nico_api.config import Settings
from nico_api.storage.engine import postgres_connect_args
from nico_api.storage.errors import StorageDeadlineError

if TYPE_CHECKING:
    from nico_api.metrics import ServiceMetrics

T = TypeVar("T")


class RequestLimits:
    """How many requests may use the database at once (as many as the pool has connections),
    and the deadline of each one's database work."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics | None) -> None:
        self.settings = settings
        self.metrics = metrics
        # Per event loop: a limiter belongs to the loop that created it.
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """A request's turn to use the database: few threads contend less for the GIL than
        many, and a request that waits longer than the pool timeout for its turn is answered
        503 rather than queued."""
        settings = self.settings
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots.setdefault(loop, asyncio.Semaphore(settings.db_capacity))
        metrics = self.metrics
        if slots.locked():
            if metrics is not None:
                metrics.db_waits.inc()
            try:
                async with asyncio.timeout(settings.db_pool_timeout):
                    await slots.acquire()
            except TimeoutError:
                if metrics is not None:
                    metrics.db_timeouts.inc()
                raise PoolTimeoutError(
                    "no database connection became free within the pool timeout"
                ) from None
        else:
            await slots.acquire()  # free: taken at once
        if metrics is not None:
            metrics.db_in_use.inc()
        try:
            yield
        finally:
            slots.release()
            if metrics is not None:
                metrics.db_in_use.dec()

    async def until_deadline(self, work: asyncio.Future[T]) -> T:
        """The outcome of a request's database work, or StorageDeadlineError at the request
        deadline: a database that stops answering (frozen, or behind a black hole) holds its
        connection until TCP gives up, while the request is answered then. Work the request
        leaves behind is cancelled, and goes on until it ends, its outcome read."""
        loop = asyncio.get_running_loop()
        # Woken by the work's end or by the deadline, whichever comes first: cheaper than
        # asyncio's timeout and shield around it.
        settled = loop.create_future()
        work.add_done_callback(functools.partial(_settle, settled))
        deadline = loop.call_later(self.settings.db_request_timeout, _settle, settled)
        try:
            await settled
        except BaseException:
            # The request itself is cancelled (ended or done at the same moment or not).
            _abandon(work, deadline)
            raise
        if not work.done():
            _abandon(work, deadline)
            raise StorageDeadlineError(
                f"the database did not answer within {self.settings.db_request_timeout:g}s"
            )
        deadline.cancel()
        try:
            return work.result()
        except (PoolTimeoutError, PoolTimeout):
            # The engine's pool, or the event loop's pool, had no connection free in time.
            if self.metrics is not None:
                self.metrics.db_timeouts.inc()
            raise


def _settle(settled: asyncio.Future[None], *_: Any) -> None:
    if not settled.done():
        settled.set_result(None)


def _abandon(work: asyncio.Future[Any], deadline: asyncio.TimerHandle) -> None:
    """Stop waiting for `work`: cancelled if it still runs, and its outcome read when it ends."""
    deadline.cancel()
    work.cancel()
    work.add_done_callback(_retrieved)


def _retrieved(work: asyncio.Future[Any]) -> None:
    """Read an abandoned read's outcome, so that it is not reported as never retrieved."""
    if not work.cancelled():
        work.exception()


class PooledReads:
    """The request path's reads of PostgreSQL on the event loop, without a worker thread,
    through psycopg_pool's asynchronous pool: one pool per event loop (a connection belongs to
    its loop), of at most the request capacity's connections, beside the engine's. Connections
    are made when a request needs one, and a failed attempt is given up at once rather than
    retried after a backoff, so that the first request after an outage connects afresh. A read
    on an idle connection the server dropped runs again on another, which spares the round trip
    of checking each connection before use."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.size = settings.db_capacity
        self.timeout = settings.db_pool_timeout
        self.dialect = engine.dialect
        url = engine.url.set(drivername="postgresql")
        self.conninfo = url.render_as_string(hide_password=False)
        options = postgres_connect_args(settings)
        # Times come back in UTC, as the engine's UTCDateTime reads them.
        options["options"] += " -c timezone=UTC"
        self.options = {**options, "autocommit": True, "row_factory": namedtuple_row}
        self._compiled: dict[int, tuple[Executable, str, dict[str, Any]]] = {}
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncConnectionPool] = (
            weakref.WeakKeyDictionary()
        )
        # Connections not yet used for a read: a failure on one is not a dropped idle one.
        self._unused: weakref.WeakSet[psycopg.AsyncConnection[Any]] = weakref.WeakSet()

    def _sql(self, statement: Executable) -> tuple[str, dict[str, Any]]:
        """The statement as psycopg runs it, compiled once; and its fixed parameters."""
        cached = self._compiled.get(id(statement))
        if cached is None or cached[0] is not statement:
            compiled = statement.compile(dialect=self.dialect)
            cached = self._compiled[id(statement)] = (statement, str(compiled), compiled.params)
        return cached[1], cached[2]

    async def _configure(self, c: psycopg.AsyncConnection[Any]) -> None:
        # Documents come as the text stored, as the engine reads them (queries._TASK_COLUMNS).
        for document in ("json", "jsonb"):
            c.adapters.register_loader(document, TextLoader)
        self._unused.add(c)

    async def _pool(self) -> AsyncConnectionPool:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            pool = self._pools[loop] = AsyncConnectionPool(
                self.conninfo,
                kwargs=self.options,
                min_size=0,
                max_size=self.size,
                open=False,
                configure=self._configure,
                timeout=self.timeout,
                reconnect_timeout=0,
                name="request-reads",
            )
        if pool.closed:
            await pool.open()
        return pool

    async def row(self, statement: Executable, params: dict[str, Any]) -> Any:
        sql, fixed = self._sql(statement)
        values = {**fixed, **params}
        pool = await self._pool()
        for attempt in range(self.size + 1):
            # getconn and putconn rather than the connection() block: 12 us less per read.
            c = await pool.getconn()
            reused = c not in self._unused
            self._unused.discard(c)
            try:
                return await (await c.execute(sql, values)).fetchone()
            except psycopg.OperationalError:
                # A connection the server dropped while it sat idle (the pool discards it): a
                # read is safe to run again. A new one that fails is an outage.
                if not (reused and c.broken) or attempt == self.size:
                    raise
            finally:
                await pool.putconn(c)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        """Close this event loop's pool, at the app's shutdown."""
        pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.close()


class LockedError(Exception):
    """An SQLite read on the event loop met a lock it would have had to wait for."""


# SQLite's result codes for a lock held elsewhere (SQLITE_BUSY and SQLITE_LOCKED, any variant).
_LOCKED = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}


class LocalReads:
    """The request path's reads of an SQLite file, on the event loop: a point read takes tens
    of microseconds, less than the round trip to a worker thread. Each event loop keeps one
    connection of its own, outside the pool (whose checkout could wait), and never waits for a
    lock: in WAL mode a reader meets one only in rare moments (another connection recovering the
    log, or holding the file exclusively), and then `LockedError` sends it to a worker thread,
    which waits as long as the statement timeout allows."""

    def __init__(self, engine: Engine) -> None:
        # Each loop's connection is made at its first read, made again at the first read after
        # the pool is disposed, and closed at the app's shutdown (close_reads) or, should its
        # loop go without one, by garbage collection, on whichever thread that runs.
        self.engine = create_engine(
            engine.url, poolclass=NullPool, connect_args={"timeout": 0, "check_same_thread": False}
        )
        self._generation = 0
        self._loops: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[int, Connection]
        ] = weakref.WeakKeyDictionary()

    def row(self, statement: Executable, params: dict[str, Any]) -> Any:
        """The first row of a read (None if it has none), or LockedError at once."""
        loop = asyncio.get_running_loop()
        held = self._loops.get(loop)
        if held is None or held[0] != self._generation:
            if held is not None:
                held[1].close()
            held = self._loops[loop] = (self._generation, self.engine.connect())
        c = held[1]
        try:
            return c.execute(statement, params).first()
        except OperationalError as error:
            if getattr(error.orig, "sqlite_errorcode", None) is None:
                raise
            if error.orig.sqlite_errorcode & 0xFF not in _LOCKED:
                raise
            raise LockedError from error
        finally:
            # No read snapshot is kept between requests: each read sees the latest commit.
            c.rollback()

    def close(self) -> None:
        """Close this event loop's connection."""
        held = self._loops.pop(asyncio.get_running_loop(), None)
        if held is not None:
            held[1].close()

    def dispose(self) -> None:
        """The loops' connections are made again before their next read: the file may be new."""
        self._generation += 1
