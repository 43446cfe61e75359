"""The database: engine and pool, sessions, the limit and deadline of each request's database
work, the task reads on the event loop, schema migrations, and a readiness probe."""

from __future__ import annotations

import asyncio
import functools
import math
import sqlite3
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg.rows import namedtuple_row
from psycopg.types.string import TextLoader
from sqlalchemy import Connection, Engine, Executable, create_engine, event, make_url, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from nico_api.config import Settings
from nico_api.storage import queries
from nico_api.storage.errors import StorageDeadlineError

if TYPE_CHECKING:
    from nico_api.metrics import ServiceMetrics

T = TypeVar("T")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


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
        self.direct = DirectReads(settings, self.engine) if postgres else None
        self.local = LocalReads(self.engine) if self.engine.dialect.name == "sqlite" else None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Per event loop: a limiter belongs to the loop that created it.
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    @asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """A request's turn to use the database, at most as many at once as the pool has
        connections: few threads contend less for the GIL than many, and a request that waits
        longer than the pool timeout for its turn is answered 503 rather than queued."""
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

    async def _until_deadline(self, work: asyncio.Future[T]) -> T:
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
        except PoolTimeoutError:
            # The engine's pool, or every event-loop connection still held by reads abandoned
            # at their deadline.
            if self.metrics is not None:
                self.metrics.db_timeouts.inc()
            raise

    async def run_in_thread(self, work: Callable[..., T], *args: Any) -> T:
        """Run blocking database work in a worker thread, in the request's turn."""
        async with self._turn():
            # The event loop's own thread pool: asyncio's hand-over costs less than anyio's.
            loop = asyncio.get_running_loop()
            return await self._until_deadline(
                loop.run_in_executor(None, functools.partial(work, *args))
            )

    async def read_row(self, statement: Executable, params: dict[str, Any]) -> Any:
        """The first row of a read (None if it has none). On SQLite on the event loop at once,
        unless another connection holds a lock it would wait for; on PostgreSQL on the event
        loop in the request's turn, cut off at its deadline; otherwise in a worker thread."""
        if self.local is not None:
            try:
                return self.local.row(statement, params)
            except LockedError:
                pass
        elif self.direct is not None:
            return await self._read_directly(self.direct, statement, params)
        return await self.run_in_thread(self.first_row, statement, params)

    async def _read_directly(
        self, direct: DirectReads, statement: Executable, params: dict[str, Any]
    ) -> Any:
        async with self._turn():
            # A read cut off at the deadline is cancelled by the driver (waiting on the server
            # if it must) after the request is answered, as an abandoned worker thread would be.
            return await self._until_deadline(
                asyncio.get_running_loop().create_task(direct.row(statement, params))
            )

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
        """Raise unless the database answers a query now."""
        with self.connection() as c:
            c.execute(text("SELECT 1"))

    async def close_reads(self) -> None:
        """Close this event loop's own connections, at the app's shutdown."""
        if self.direct is not None:
            await self.direct.close()
        if self.local is not None:
            self.local.close()

    def dispose(self) -> None:
        """Close the pool's connections (at shutdown, or before the database is replaced)."""
        self.engine.dispose()
        if self.local is not None:
            self.local.dispose()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` with the migrations: the only way the schema changes."""
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
    """Migrations and recounts read whole tables: the per-request statement limit is lifted."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SET LOCAL statement_timeout = 0"))


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


class DirectReads:
    """The request path's reads over psycopg's asynchronous connections, without a worker
    thread. Each event loop keeps its own connections (a connection belongs to its loop): idle
    ones are reused, new ones made in the request that needs one (at once, as the engine does,
    rather than after a pool's reconnection backoff), as many open as the engine's pool may
    hold, beside it. A read on an idle connection the server dropped runs again on another,
    which spares the round trip of checking each connection before use."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.limit = settings.db_capacity
        self.dialect = engine.dialect
        url = engine.url.set(drivername="postgresql")
        self.conninfo = url.render_as_string(hide_password=False)
        options = postgres_connect_args(settings)
        # Times come back in UTC, as the engine's UTCDateTime reads them.
        options["options"] += " -c timezone=UTC"
        self.options = {**options, "autocommit": True, "row_factory": namedtuple_row}
        self._compiled: dict[int, tuple[Executable, str, dict[str, Any]]] = {}
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Connections] = (
            weakref.WeakKeyDictionary()
        )

    def _sql(self, statement: Executable) -> tuple[str, dict[str, Any]]:
        """The statement as psycopg runs it, compiled once; and its fixed parameters."""
        cached = self._compiled.get(id(statement))
        if cached is None or cached[0] is not statement:
            compiled = statement.compile(dialect=self.dialect)
            cached = self._compiled[id(statement)] = (statement, str(compiled), compiled.params)
        return cached[1], cached[2]

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[tuple[psycopg.AsyncConnection[Any], bool]]:
        """A connection, and whether it sat idle (the server may have dropped it since)."""
        loop = asyncio.get_running_loop()
        connections = self._loops.get(loop)
        if connections is None:
            connections = self._loops[loop] = _Connections()
        reused = bool(connections.idle)
        if reused:
            c = connections.idle.pop()
        else:
            # Connections a deadline abandoned stay open until their query ends.
            if connections.open >= self.limit:
                raise PoolTimeoutError("every database connection is in use")
            connections.open += 1
            try:
                c = await psycopg.AsyncConnection.connect(self.conninfo, **self.options)
            except BaseException:
                connections.open -= 1
                raise
            # Documents come as the text stored, as the engine reads them (queries._TASK_COLUMNS).
            for document in ("json", "jsonb"):
                c.adapters.register_loader(document, TextLoader)
        try:
            yield c, reused
        finally:
            # Closed too when it comes back after the app's shutdown closed the idle ones.
            if connections.closed or c.closed or c.broken or c.info.transaction_status != _IDLE:
                connections.open -= 1
                await c.close()
            else:
                connections.idle.append(c)

    async def row(self, statement: Executable, params: dict[str, Any]) -> Any:
        sql, fixed = self._sql(statement)
        values = {**fixed, **params}
        for attempt in range(self.limit + 1):
            async with self._connection() as (c, reused):
                try:
                    return await (await c.execute(sql, values)).fetchone()
                except psycopg.OperationalError:
                    # A connection the server dropped while it sat idle: a read is safe to run
                    # again, on another. A new one that fails is an outage, answered as one.
                    if not (reused and c.broken) or attempt == self.limit:
                        raise
        raise AssertionError("unreachable")

    async def close(self) -> None:
        connections = self._loops.pop(asyncio.get_running_loop(), None)
        if connections is None:
            return
        connections.closed = True
        while connections.idle:
            await connections.idle.pop().close()


_IDLE = psycopg.pq.TransactionStatus.IDLE


@dataclass
class _Connections:
    """One event loop's connections: those idle, and how many are open in all."""

    idle: list[psycopg.AsyncConnection[Any]] = field(default_factory=list)
    open: int = 0
    closed: bool = False


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
