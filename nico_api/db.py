"""The database: engine and pool, sessions, schema migrations, and a readiness probe."""

from __future__ import annotations

import asyncio
import functools
import math
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread
from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from nico_api import queries
from nico_api.config import Settings
from nico_api.errors import StorageDeadlineError

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
        connect_args["connect_timeout"] = max(2, math.ceil(settings.db_connect_timeout))
        statement_ms = int(settings.db_statement_timeout * 1000)
        connect_args["options"] = f"-c statement_timeout={statement_ms}"
        # A connection whose peer vanished (a black hole) fails within about the request
        # deadline instead of the kernel's 15 minutes: keepalives while idle, and a bound on
        # data left unacknowledged.
        connect_args.update(
            keepalives=1,
            keepalives_idle=max(1, math.ceil(settings.db_request_timeout / 2)),
            keepalives_interval=1,
            keepalives_count=3,
            tcp_user_timeout=int(settings.db_request_timeout * 1000),
        )
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
            metrics.db_capacity.set(max(1, settings.db_pool_size + settings.db_max_overflow))
        self.engine = engine_for(settings)
        self._reads_autocommit = self.engine.dialect.name == "postgresql"
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Per event loop: a limiter belongs to the loop that created it.
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
            weakref.WeakKeyDictionary()
        )

    async def run_in_thread(self, work: Callable[..., T], *args: Any) -> T:
        """Run blocking database work in a worker thread, at most as many at once as the pool
        has connections: few threads contend less for the GIL than many, and a request that
        waits longer than the pool timeout for its turn is answered 503 rather than queued."""
        settings = self.settings
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            capacity = max(1, settings.db_pool_size + settings.db_max_overflow)
            slots = self._slots.setdefault(loop, anyio.CapacityLimiter(capacity))
        metrics = self.metrics
        if metrics is not None and slots.available_tokens == 0:
            metrics.db_waits.inc()
        with anyio.move_on_after(settings.db_pool_timeout) as waiting:
            await slots.acquire()
        if waiting.cancelled_caught:
            if metrics is not None:
                metrics.db_timeouts.inc()
            raise PoolTimeoutError("no database connection became free within the pool timeout")
        if metrics is not None:
            metrics.db_in_use.inc()
        try:
            # A database that stops answering (frozen, or behind a black hole) holds the worker
            # thread until TCP gives up; the request is answered at its deadline all the same.
            with anyio.fail_after(settings.db_request_timeout):
                return await anyio.to_thread.run_sync(
                    functools.partial(work, *args), abandon_on_cancel=True
                )
        except TimeoutError:
            raise StorageDeadlineError(
                f"the database did not answer within {settings.db_request_timeout:g}s"
            ) from None
        finally:
            slots.release()
            if metrics is not None:
                metrics.db_in_use.dec()

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
        with self.engine.connect() as c:
            if self._reads_autocommit:
                c = c.execution_options(isolation_level="AUTOCOMMIT")
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

    def dispose(self) -> None:
        """Close the pool's connections (at shutdown, or before the database is replaced)."""
        self.engine.dispose()


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
