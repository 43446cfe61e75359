"""The task read on the event loop of an SQLite file (Storage.local): never waiting there for a
lock, and never reading a file that has been replaced."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from nico_api.config import Settings
from nico_api.db import LocalReads, LockedError, Storage

READ = text("SELECT x FROM t")


def _file_with_a_row(path: Path, x: int = 1) -> None:
    # A rollback journal, not WAL: a writer's exclusive lock stops readers, as WAL rarely does.
    with sqlite3.connect(path, isolation_level=None) as c:
        c.execute("CREATE TABLE t (x INTEGER)")
        c.execute("INSERT INTO t VALUES (?)", (x,))
    c.close()


def _exclusive_lock(path: Path) -> sqlite3.Connection:
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")
    return blocker


def test_a_read_on_the_event_loop_does_not_wait_for_a_lock(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    _file_with_a_row(path)
    reads = LocalReads(create_engine(f"sqlite:///{path}"))

    async def read() -> int:
        try:
            return reads.row(READ, {}).x
        finally:
            reads.close()

    blocker = _exclusive_lock(path)
    started = time.monotonic()
    with pytest.raises(LockedError):
        asyncio.run(read())
    assert time.monotonic() - started < 0.5
    blocker.execute("ROLLBACK")
    assert asyncio.run(read()) == 1


def test_a_locked_read_waits_in_a_worker_thread_while_the_loop_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    _file_with_a_row(path, 7)
    storage = Storage(Settings(instance_dir=tmp_path, database_url=f"sqlite:///{path}"))
    blocker = _exclusive_lock(path)
    threading.Timer(0.3, blocker.execute, ["ROLLBACK"]).start()

    async def read_while_ticking() -> tuple[int, int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.ensure_future(tick())
        try:
            row = await storage.read_row(READ, {})
        finally:
            ticker.cancel()
            await storage.close_reads()
        return row.x, ticks

    started = time.monotonic()
    try:
        x, ticks = asyncio.run(read_while_ticking())
    finally:
        storage.dispose()
    assert x == 7
    assert time.monotonic() - started >= 0.3
    # The loop ran other work while the read waited for the lock.
    assert ticks >= 10


def test_a_replaced_file_is_read_after_the_pool_is_disposed(tmp_path: Path) -> None:
    path = tmp_path / "nico.db"
    _file_with_a_row(path, 1)
    storage = Storage(Settings(instance_dir=tmp_path, database_url=f"sqlite:///{path}"))
    replacement = tmp_path / "replacement.db"
    _file_with_a_row(replacement, 2)

    async def reads() -> list[int]:
        seen = [(await storage.read_row(READ, {})).x]
        storage.dispose()
        replacement.replace(path)
        seen.append((await storage.read_row(READ, {})).x)
        await storage.close_reads()
        return seen

    try:
        assert asyncio.run(reads()) == [1, 2]
    finally:
        storage.dispose()
