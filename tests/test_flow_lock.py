"""One Flow process per database: the lock follows the database itself, and a process that
loses it writes no further step."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from starlette.testclient import TestClient

from nico_api.config import Settings
from nico_api.flow.executor import (
    ADVISORY_LOCK,
    AlreadyRunningError,
    Executor,
    only_flow_process,
)
from nico_api.storage.db import Storage
from tests.demo import FREE_RACK
from tests.fixtures import Bearer
from tests.test_create_tasks import power, stored


def _sqlite_storage(instance: Path, database: Path) -> Storage:
    return Storage(Settings(instance_dir=instance, database_url=f"sqlite:///{database}"))


@pytest.mark.parametrize(
    "named_by", ["a link to the file", "a link to its folder", "a relative path"]
)
def test_flow_lock_follows_the_sqlite_file_not_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, named_by: str
) -> None:
    real = tmp_path / "data" / "nico.db"
    real.parent.mkdir()
    real.touch()
    if named_by == "a link to the file":
        other = tmp_path / "elsewhere.db"
        other.symlink_to(real)
    elif named_by == "a link to its folder":
        (tmp_path / "linked").symlink_to(real.parent)
        other = tmp_path / "linked" / "nico.db"
    else:
        monkeypatch.chdir(tmp_path)
        other = Path("data/../data/nico.db")
    first, second = _sqlite_storage(tmp_path, real), _sqlite_storage(tmp_path, other)
    try:
        with (
            only_flow_process(first),
            pytest.raises(AlreadyRunningError),
            only_flow_process(second),
        ):
            pass
        with only_flow_process(second):  # released with its holder
            pass
    finally:
        first.dispose()
        second.dispose()


def test_flow_lock_of_another_sqlite_file_is_its_own(tmp_path: Path) -> None:
    first = _sqlite_storage(tmp_path, tmp_path / "one.db")
    second = _sqlite_storage(tmp_path, tmp_path / "two.db")
    try:
        with only_flow_process(first), only_flow_process(second):
            pass
    finally:
        first.dispose()
        second.dispose()


def test_a_flow_process_that_loses_its_lock_writes_no_further_step(
    client: TestClient,
    bearer: Bearer,
    storage: Storage,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if storage.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's advisory lock lives in a session that can be ended")
    (task_id,) = power(client, bearer(), FREE_RACK).json()["taskIds"]
    quick = settings.model_copy(update={"flow_step_seconds": 0})
    with only_flow_process(storage) as lock:
        flow = Executor(storage, quick, lock=lock)
        assert flow.run_due() == 1  # started under the lock
        assert stored(storage, task_id).progress == 1
        # The lock's session is ended, and another Flow process takes the lock.
        end_the_lock_session(storage)
        with storage.engine.connect() as other:
            assert other.scalar(text(f"SELECT pg_try_advisory_lock({ADVISORY_LOCK})"))
            other.commit()
            try:
                with (
                    caplog.at_level(logging.ERROR, logger="nico_api.flow"),
                    pytest.raises(AlreadyRunningError),
                ):
                    flow.run(threading.Event())
            finally:
                other.execute(text(f"SELECT pg_advisory_unlock({ADVISORY_LOCK})"))
                other.commit()
    assert stored(storage, task_id).progress == 1  # no step written without the lock
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("flow lock lost") for m in messages), messages
    assert "another Flow process holds the flow lock: stopping" in messages


def test_a_flow_process_whose_session_ends_takes_the_lock_again_when_free(
    client: TestClient, bearer: Bearer, storage: Storage, settings: Settings
) -> None:
    if storage.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's advisory lock lives in a session that can be ended")
    (task_id,) = power(client, bearer(), FREE_RACK).json()["taskIds"]
    quick = settings.model_copy(update={"flow_step_seconds": 0})
    with only_flow_process(storage) as lock:
        flow = Executor(storage, quick, lock=lock)
        end_the_lock_session(storage)
        with pytest.raises(OperationalError):  # the ended session's; the run loop retries
            flow.run_due()
        assert flow.run_due() == 1
        assert stored(storage, task_id).progress == 1
        with pytest.raises(AlreadyRunningError), only_flow_process(storage):
            pass


def end_the_lock_session(storage: Storage) -> None:
    """End the session holding the Flow's advisory lock, and return once it has ended."""
    with storage.engine.connect() as admin:
        holder = admin.scalar(
            text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND ((classid::bigint << 32) | objid::bigint) = :key"
            ),
            {"key": ADVISORY_LOCK},
        )
        assert holder is not None
        # With a timeout, it returns once the session has ended (PostgreSQL 14 and later).
        assert admin.scalar(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": holder})
        admin.commit()
