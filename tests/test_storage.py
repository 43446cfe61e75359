"""The task read on the event loop of an SQLite file (Storage.local): never waiting there for a
lock, never keeping a snapshot between reads, and never reading a file that has been replaced."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from nico_api.config import Settings
from nico_api.metrics import ServiceMetrics
from nico_api.storage.db import LocalReads, LockedError, Storage
from nico_api.storage.errors import StorageDeadlineError

READ = text("SELECT x FROM t")


def _file_with_a_row(path: Path, x: int = 1) -> None:
    # A rollback journal, not WAL: a writer's exclusive lock stops readers, as WAL rarely does.
    c = sqlite3.connect(path, isolation_level=None)
    try:
        c.execute("CREATE TABLE t (x INTEGER)")
        c.execute("INSERT INTO t VALUES (?)", (x,))
    finally:
        c.close()


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[sqlite3.Connection]:
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        yield blocker
    finally:
        blocker.close()  # its transaction, if still open, is rolled back


@contextmanager
def _storage(path: Path, **settings: Any) -> Iterator[Storage]:
    storage = Storage(
        Settings(instance_dir=path.parent, database_url=f"sqlite:///{path}", **settings)
    )
    try:
        yield storage
    finally:
        storage.dispose()


async def _read(storage: Storage, statement: Any = READ) -> Any:
    try:
        return await storage.read_row(statement, {})
    finally:
        await storage.close_reads()


def test_a_read_on_the_event_loop_does_not_wait_for_a_lock(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    _file_with_a_row(path)
    reads = LocalReads(create_engine(f"sqlite:///{path}"))

    async def read() -> int:
        try:
            return reads.row(READ, {}).x
        finally:
            reads.close()

    with _exclusive_lock(path) as blocker:
        started = time.monotonic()
        with pytest.raises(LockedError):
            asyncio.run(read())
        assert time.monotonic() - started < 0.5
        blocker.execute("ROLLBACK")
        assert asyncio.run(read()) == 1


@pytest.mark.slow  # waits on the clock: SQLite's lock wait
def test_a_locked_read_waits_in_a_worker_thread_while_the_loop_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    _file_with_a_row(path, 7)

    async def read_while_ticking(storage: Storage) -> tuple[int, int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.ensure_future(tick())
        try:
            row = await _read(storage)
        finally:
            ticker.cancel()
        return row.x, ticks

    with _storage(path) as storage, _exclusive_lock(path) as blocker:
        threading.Timer(0.3, blocker.execute, ["ROLLBACK"]).start()
        started = time.monotonic()
        x, ticks = asyncio.run(read_while_ticking(storage))
    assert x == 7
    assert time.monotonic() - started >= 0.3
    # The loop ran other work while the read waited for the lock.
    assert ticks >= 10


@pytest.mark.slow  # waits on the clock
def test_a_read_locked_out_past_the_request_deadline_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    _file_with_a_row(path)

    async def answered_after(storage: Storage) -> float:
        started = time.monotonic()
        with pytest.raises(StorageDeadlineError):
            await _read(storage)
        return time.monotonic() - started

    limits = {"db_request_timeout": 0.5, "db_statement_timeout": 1.0}
    with _storage(path, **limits) as storage, _exclusive_lock(path):
        # Answered at the deadline; the abandoned thread waits out the lock timeout.
        assert 0.4 < asyncio.run(answered_after(storage)) < 2


def test_each_read_sees_the_latest_commit(tmp_path: Path) -> None:
    path = tmp_path / "nico.db"
    _file_with_a_row(path, 1)

    async def reads(storage: Storage) -> list[int]:
        seen = [(await storage.read_row(READ, {})).x]
        writer = sqlite3.connect(path, isolation_level=None)
        writer.execute("UPDATE t SET x = 2")
        writer.close()
        seen.append((await storage.read_row(READ, {})).x)
        await storage.close_reads()
        return seen

    with _storage(path) as storage:
        storage.ping()  # the pool's first connection turns the file to WAL, as in service
        assert asyncio.run(reads(storage)) == [1, 2]


def test_an_error_other_than_a_lock_is_not_read_again_in_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "nico.db"
    _file_with_a_row(path)
    with _storage(path) as storage:

        async def in_a_thread(*_args: object) -> None:
            raise AssertionError("read again in a worker thread")

        monkeypatch.setattr(storage, "run_in_thread", in_a_thread)
        with pytest.raises(OperationalError, match="no such table"):
            asyncio.run(_read(storage, text("SELECT x FROM missing")))


def test_a_replaced_file_is_read_after_the_pool_is_disposed(tmp_path: Path) -> None:
    path = tmp_path / "nico.db"
    _file_with_a_row(path, 1)
    replacement = tmp_path / "replacement.db"
    _file_with_a_row(replacement, 2)

    async def reads(storage: Storage) -> list[int]:
        seen = [(await storage.read_row(READ, {})).x]
        storage.dispose()
        replacement.replace(path)
        seen.append((await storage.read_row(READ, {})).x)
        await storage.close_reads()
        return seen

    with _storage(path) as storage:
        assert asyncio.run(reads(storage)) == [1, 2]


def test_a_database_without_a_reader_on_the_loop_is_read_in_a_worker_thread(
    tmp_path: Path,
) -> None:
    path = tmp_path / "nico.db"
    _file_with_a_row(path, 3)
    with _storage(path) as storage:
        # As for a backend other than SQLite and PostgreSQL: neither reader exists.
        storage.local = None
        assert storage.pooled is None
        readers: list[str] = []
        original = storage.first_row

        def recorded(*args: Any) -> Any:
            readers.append(threading.current_thread().name)
            return original(*args)

        storage.first_row = recorded  # type: ignore[method-assign]
        assert asyncio.run(_read(storage)).x == 3
    assert readers and readers[0] != threading.main_thread().name


def _work(kind: str) -> asyncio.Future[Any]:
    """Database work that runs long: a task on the event loop, or a worker thread's."""
    if kind == "task":
        return asyncio.ensure_future(asyncio.sleep(10))
    return asyncio.get_running_loop().run_in_executor(None, time.sleep, 0.3)


@pytest.mark.slow  # waits on the clock: a 0.2 s deadline
@pytest.mark.parametrize("kind", ["task", "thread"])
@pytest.mark.parametrize("ended_by", ["the deadline", "the request's cancellation"])
def test_work_a_request_leaves_behind_is_cancelled(
    tmp_path: Path, ended_by: str, kind: str
) -> None:
    path = tmp_path / "nico.db"
    _file_with_a_row(path)

    async def scenario(storage: Storage) -> tuple[type[BaseException], bool]:
        work = _work(kind)
        request = asyncio.ensure_future(storage.limits.until_deadline(work))
        await asyncio.sleep(0.05)
        if ended_by != "the deadline":
            request.cancel()
        try:
            await request
        except BaseException as error:  # which of the two is the point
            raised = type(error)
        await asyncio.sleep(0)
        return raised, work.cancelled()

    with _storage(path, db_request_timeout=0.2) as storage:
        raised, cancelled = asyncio.run(scenario(storage))
    expected = StorageDeadlineError if ended_by == "the deadline" else asyncio.CancelledError
    assert (raised, cancelled) == (expected, True)


def test_an_error_of_work_ending_as_its_request_is_cancelled_is_read(tmp_path: Path) -> None:
    # The work fails in the same pass of the loop as its request is cancelled: its error is
    # read, never reported as a future's exception that nobody retrieved.
    path = tmp_path / "nico.db"
    _file_with_a_row(path)
    reported: list[dict[str, Any]] = []

    async def scenario(storage: Storage) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        work = loop.create_future()
        request = asyncio.ensure_future(storage.limits.until_deadline(work))
        await asyncio.sleep(0)
        work.set_exception(RuntimeError("the database failed"))
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        del work, request
        await asyncio.sleep(0)
        gc.collect()

    with _storage(path) as storage:
        asyncio.run(scenario(storage))
    assert reported == []


def test_a_pool_timeout_in_the_work_is_counted(tmp_path: Path) -> None:
    path = tmp_path / "nico.db"
    _file_with_a_row(path)
    metrics = ServiceMetrics()
    storage = Storage(Settings(instance_dir=tmp_path, database_url=f"sqlite:///{path}"), metrics)

    def exhausted() -> None:
        raise PoolTimeoutError("the engine's pool had no connection to give")

    try:
        with pytest.raises(PoolTimeoutError):
            asyncio.run(storage.run_in_thread(exhausted))
    finally:
        storage.dispose()
    assert metrics.registry.get_sample_value("nico_db_pool_timeouts_total") == 1
