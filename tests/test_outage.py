"""Database outages against a real PostgreSQL server of the test's own: the service answers 503
with Retry-After within a bounded time, and recovers by itself when the database returns."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from starlette.testclient import TestClient

from nico_api.auth.dev_issuer import DevIssuer
from nico_api.config import Settings
from nico_api.storage import fixture
from nico_api.web.app import create_app
from tests.demo import ACME, ACME_SITE, RUNNING_TASK, task_path
from tests.fixtures import demo_data
from tests.pgserver import PrivatePostgres, find_bin_dir

# Real processes, servers or browsers: run by `make test`, left out by `make test-fast`.
pytestmark = pytest.mark.slow

STORAGE_DOWN = "Task storage is temporarily unavailable"


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        if os.environ.get("NICO_TEST_DATABASE_URL"):
            pytest.fail("PostgreSQL server programs (pg_ctl, initdb) are required here")
        pytest.skip("PostgreSQL server programs (pg_ctl, initdb) are not installed")
    server = PrivatePostgres(bin_dir)
    server.start()
    yield server
    server.remove()


@pytest.fixture
def postgres(private_postgres: PrivatePostgres) -> PrivatePostgres:
    """The module's server, running: a test that stops it may leave it stopped."""
    if not (private_postgres.data / "postmaster.pid").exists():
        private_postgres.start()
    return private_postgres


def outage_settings(tmp_path: Path, url: str, **overrides: float) -> Settings:
    values: dict = {
        "db_connect_timeout": 2,
        "db_statement_timeout": 1,
        "db_pool_timeout": 1,
        "db_pool_size": 2,
        "db_max_overflow": 0,
        "db_request_timeout": 2,
    }
    values.update(overrides)
    return Settings(
        instance_dir=tmp_path / "instance", database_url=url, validate_responses=True, **values
    )


@pytest.fixture
def service(
    postgres: PrivatePostgres, tmp_path: Path
) -> Iterator[tuple[TestClient, Callable[[], object]]]:
    settings = outage_settings(tmp_path, postgres.url)
    app = create_app(settings)
    app.runtime.storage.upgrade()
    fixture.load(app.runtime.storage, demo_data())
    token = DevIssuer(settings).issue(ACME, ["PROVIDER_ADMIN"])
    with app.test_client() as client:

        def get_task() -> object:
            return client.get(
                task_path(RUNNING_TASK),
                params={"siteId": ACME_SITE},
                headers={"Authorization": f"Bearer {token}"},
            )

        yield client, get_task


def timed(call: Callable[[], object]) -> tuple[object, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def assert_unavailable(response, seconds: float, limit: float) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"source": "nico", "message": STORAGE_DOWN, "data": None}
    assert int(response.headers["retry-after"]) > 0
    assert seconds < limit, f"took {seconds:.2f}s"


def test_database_stopped_then_restarted(service, postgres: PrivatePostgres) -> None:
    client, get_task = service
    assert get_task().status_code == 200
    assert client.get("/readyz").status_code == 200

    postgres.stop()
    response, seconds = timed(get_task)
    assert_unavailable(response, seconds, limit=5)
    ready, seconds = timed(lambda: client.get("/readyz"))
    assert_unavailable(ready, seconds, limit=5)
    assert client.get("/healthz").status_code == 200  # the process itself is fine

    postgres.start()
    assert get_task().status_code == 200  # no restart of the service
    assert client.get("/readyz").status_code == 200


def _lock_tasks(postgres: PrivatePostgres) -> psycopg.Connection:
    blocker = psycopg.connect(f"host=127.0.0.1 port={postgres.port} user=postgres dbname=postgres")
    blocker.execute("LOCK TABLE task IN ACCESS EXCLUSIVE MODE")  # held until rollback
    return blocker


def test_query_slower_than_the_statement_timeout(service, postgres: PrivatePostgres) -> None:
    _client, get_task = service
    blocker = _lock_tasks(postgres)
    try:
        response, seconds = timed(get_task)
        assert_unavailable(response, seconds, limit=4)
    finally:
        blocker.rollback()
        blocker.close()
    assert get_task().status_code == 200


def test_connections_dropped_by_the_server(service, postgres: PrivatePostgres) -> None:
    _client, get_task = service
    assert get_task().status_code == 200
    admin = psycopg.connect(
        f"host=127.0.0.1 port={postgres.port} user=postgres dbname=postgres", autocommit=True
    )
    with admin:
        # Idle pooled connections die: the pool notices and reconnects.
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = 'postgres' AND pid <> pg_backend_pid()"
        )
        assert get_task().status_code == 200

        # A connection killed in the middle of a request: that request gets 503, the next is fine.
        blocker = _lock_tasks(postgres)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(timed, get_task)
            waiting = "FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            deadline = time.monotonic() + 5
            while not admin.execute(f"SELECT count(*) {waiting}").fetchone()[0]:  # type: ignore[index]
                assert time.monotonic() < deadline, "the request never waited for the lock"
                time.sleep(0.01)
            admin.execute(f"SELECT pg_terminate_backend(pid) {waiting} AND pid <> pg_backend_pid()")
            response, seconds = pending.result(timeout=10)
        blocker.rollback()
        blocker.close()
    assert_unavailable(response, seconds, limit=4)
    assert get_task().status_code == 200


def test_pool_exhausted(service, postgres: PrivatePostgres) -> None:
    _client, get_task = service
    blocker = _lock_tasks(postgres)
    try:
        # Two requests hold both pooled connections while blocked; the third waits for the pool.
        with ThreadPoolExecutor(3) as pool:
            results = [pool.submit(timed, get_task) for _ in range(3)]
            answers = [future.result(timeout=15) for future in results]
    finally:
        blocker.rollback()
        blocker.close()
    for response, seconds in answers:
        assert_unavailable(response, seconds, limit=4)
    assert get_task().status_code == 200


def test_database_that_never_answers(tmp_path: Path) -> None:
    # A listener that accepts connections and never speaks, like a hung server.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        accepted: list[socket.socket] = []
        stop = threading.Event()

        def accept() -> None:
            silent.settimeout(0.2)
            while not stop.is_set():
                try:
                    accepted.append(silent.accept()[0])
                except TimeoutError:
                    continue

        acceptor = threading.Thread(target=accept, daemon=True)
        acceptor.start()
        settings = outage_settings(
            tmp_path, f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        )
        try:
            with create_app(settings).test_client() as client:
                response, seconds = timed(lambda: client.get("/readyz"))
        finally:
            stop.set()
            acceptor.join(timeout=5)
            for connection in accepted:
                connection.close()
    assert_unavailable(response, seconds, limit=6)


def _signal_server(postgres: PrivatePostgres, signal: int) -> None:
    """Send `signal` to the server's every process: the postmaster and its backends."""
    postmaster = int((postgres.data / "postmaster.pid").read_text().split()[0])
    children = subprocess.run(
        ["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False
    ).stdout.split()
    for pid in [postmaster, *map(int, children)]:
        os.kill(pid, signal)


def test_a_frozen_database_answers_503_within_the_deadline(
    service, postgres: PrivatePostgres
) -> None:
    # A stopped process keeps its sockets open and acknowledged: no error ever arrives, only
    # the request's own deadline (2 s here) ends the wait.
    client, get_task = service
    assert get_task().status_code == 200
    _signal_server(postgres, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: timed(get_task), range(4)))
        for response, seconds in answers:
            assert_unavailable(response, seconds, limit=4.5)
        ready, seconds = timed(lambda: client.get("/readyz"))
        assert_unavailable(ready, seconds, limit=4.5)
        health, seconds = timed(lambda: client.get("/healthz"))
        assert health.status_code == 200 and seconds < 1
    finally:
        _signal_server(postgres, signal.SIGCONT)
    # The abandoned queries finish once the server runs again; the pool recovers by itself.
    deadline = time.monotonic() + 15
    while get_task().status_code != 200:
        assert time.monotonic() < deadline, "the service did not recover"
        time.sleep(0.2)
