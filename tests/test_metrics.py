"""Prometheus metrics: /metrics over HTTP with worker processes, the figures it reports, and how
it is switched off or moved to a port of its own; the simulated Flow's own metrics."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from starlette.testclient import TestClient

from nico_api.auth.dev_issuer import DevIssuer
from nico_api.auth.jwks import KeySet, KeySetUnavailableError
from nico_api.config import Settings
from nico_api.flow.executor import Executor
from nico_api.metrics import FlowMetrics, ServiceMetrics
from nico_api.storage.db import PoolTimeoutError, Storage
from nico_api.storage.models import Task
from nico_api.vocabulary import ACTIVE_STATUSES
from nico_api.web.app import create_app
from nico_api.web.framework import NICoApp
from nico_api.web.runtime import Runtime
from tests.demo import ACME, ACME_SITE, FREE_RACK, RUNNING_TASK, task_path
from tests.fixtures import Bearer
from tests.processes import NICO_API, POLL_SECONDS, free_port, run, serving, started_pids
from tests.test_create_tasks import power

GET_TASK_OK = ("nico_http_requests_total", {"operation": "get-task", "status": "200"})


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scrape: dict, name: str, labels: dict[str, str] | None = None) -> float:
    return scrape.get((name, tuple(sorted((labels or {}).items()))), 0.0)


def runtime_of(client: TestClient) -> Runtime:
    return client.app.runtime  # type: ignore[attr-defined]


def test_metrics_need_no_token_and_count_requests_by_operation_and_status(
    client: TestClient, bearer: Bearer
) -> None:
    before = samples(client.get("/metrics").text)
    for _ in range(3):
        ok = client.get(task_path(RUNNING_TASK), params={"siteId": ACME_SITE}, headers=bearer())
        assert ok.status_code == 200
    assert client.get(task_path(RUNNING_TASK), params={"siteId": ACME_SITE}).status_code == 401
    assert client.get("/no/such/path").status_code == 404

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    after = samples(response.text)

    def moved(name: str, labels: dict[str, str]) -> float:
        return value(after, name, labels) - value(before, name, labels)

    assert moved(*GET_TASK_OK) == 3
    assert moved("nico_http_requests_total", {"operation": "get-task", "status": "401"}) == 1
    assert moved("nico_http_requests_total", {"operation": "none", "status": "404"}) == 1
    # Each answered request is one observation of its operation's latency.
    latency = "nico_http_request_duration_seconds"
    assert moved(f"{latency}_count", {"operation": "get-task"}) == 4
    assert moved(f"{latency}_bucket", {"operation": "get-task", "le": "+Inf"}) == 4
    assert moved(f"{latency}_sum", {"operation": "get-task"}) > 0
    # The pool: its capacity, and no connection held once the requests are answered.
    assert value(after, "nico_db_connections_max") == runtime_of(client).settings.db_capacity
    assert value(after, "nico_db_connections_in_use") == 0


@pytest.mark.slow  # waits on the clock: the pool's 0.2 s timeout
def test_database_waits_and_timeouts_are_counted(settings: Settings) -> None:
    metrics = ServiceMetrics()
    one = settings.model_copy(update={"db_pool_size": 1, "db_pool_timeout": 0.2})
    storage = Storage(one, metrics)
    release = threading.Event()
    get = metrics.registry.get_sample_value

    async def hold_and_wait() -> None:
        holder = asyncio.ensure_future(storage.run_in_thread(release.wait, 5))
        # Until the holder has the one connection.
        while get("nico_db_connections_in_use") != 1:
            assert not holder.done(), holder
            await asyncio.sleep(0.001)
        with pytest.raises(PoolTimeoutError):
            await storage.run_in_thread(lambda: None)
        release.set()
        await holder

    try:
        asyncio.run(hold_and_wait())
    finally:
        release.set()
        storage.dispose()
    assert get("nico_db_pool_waits_total") == 1
    assert get("nico_db_pool_timeouts_total") == 1
    assert get("nico_db_connections_in_use") == 0


def test_key_set_fetches_are_counted_by_issuer_and_outcome(tmp_path: Path) -> None:
    metrics = ServiceMetrics()
    document = DevIssuer(Settings(instance_dir=tmp_path, database_url="sqlite://")).write_jwks()

    def key_set(path: Path) -> KeySet:
        return KeySet(str(path), 1.0, on_fetch=lambda ok: metrics.key_set_fetched("kc", ok))

    assert asyncio.run(key_set(document).key("any")) is None
    with pytest.raises(KeySetUnavailableError):
        asyncio.run(key_set(tmp_path / "missing.json").key("any"))
    get = metrics.registry.get_sample_value
    assert get("nico_key_set_fetches_total", {"issuer": "kc", "outcome": "ok"}) == 1
    assert get("nico_key_set_fetches_total", {"issuer": "kc", "outcome": "failed"}) == 1


@pytest.mark.parametrize(
    "change", [{"metrics": False}, {"metrics_port": 9}], ids=["switched-off", "own-port"]
)
def test_metrics_elsewhere_or_off_are_not_found_here(
    settings: Settings, change: dict[str, object]
) -> None:
    with create_app(settings.model_copy(update=change)).test_client() as client:
        response = client.get("/metrics")
    assert response.status_code == 404
    assert response.json() == {"source": "nico", "message": "Not Found", "data": None}


def test_flow_reports_its_tasks_by_status_and_step_lag(
    client: TestClient, bearer: Bearer, storage: Storage, settings: Settings
) -> None:
    metrics = FlowMetrics()
    flow = Executor(storage, settings.model_copy(update={"flow_step_seconds": 0}), metrics)
    get = metrics.registry.get_sample_value

    def reported_as_stored() -> dict[str, float]:
        with storage.connection() as c:
            stored = dict(c.execute(select(Task.status, func.count()).group_by(Task.status)).all())
        held = {status: get("nico_flow_tasks", {"status": status}) for status in ACTIVE_STATUSES}
        assert held == {status: stored.get(status, 0) for status in ACTIVE_STATUSES}
        return held

    power(client, bearer(), FREE_RACK)
    flow.sweep()
    assert reported_as_stored()["pending"] >= 1  # the new task
    assert get("nico_flow_steps_total") == 0
    flow.run_due()
    assert get("nico_flow_steps_total") >= 1
    assert get("nico_flow_step_lag_seconds_count", {"kind": "start"}) >= 1
    assert get("nico_flow_step_lag_seconds_sum", {"kind": "start"}) >= 0
    flow.sweep()
    assert reported_as_stored()["running"] >= 1


@pytest.fixture
def token(env: dict[str, str]) -> str:
    return run(env, "token", "--org", ACME, "--role", "PROVIDER_ADMIN").stdout.strip()


def scrape(url: str) -> dict:
    response = httpx.get(url, timeout=5)
    assert response.status_code == 200, response.text
    return samples(response.text)


def read_tasks(base_url: str, token: str, count: int) -> None:
    # A new connection each time, so that both workers take requests.
    for _ in range(count):
        response = httpx.get(
            base_url + task_path(RUNNING_TASK),
            params={"siteId": ACME_SITE},
            headers={"Authorization": f"Bearer {token}", "Connection": "close"},
        )
        assert response.status_code == 200, response.text


@pytest.mark.deep  # several server processes: `make test-deep`
@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_over_http_sum_every_worker(
    server: str, token: str, tmp_path: Path, workers: int
) -> None:
    before = value(scrape(server + "/metrics"), *GET_TASK_OK)
    read_tasks(server, token, 40)
    after = scrape(server + "/metrics")
    assert value(after, *GET_TASK_OK) - before == 40
    assert value(after, "nico_http_request_duration_seconds_count", {"operation": "get-task"}) >= 40
    assert value(after, "nico_db_connections_max") == 4 * workers  # each worker's pool, summed
    # Every worker answered some (new connections go to either): the scrape summed them all.
    log = tmp_path / "server.log"
    served_by = {
        json.loads(line)["pid"]
        for line in log.read_text().splitlines()
        if '"operation": "get-task"' in line
    }
    assert len(served_by) == workers
    read_tasks(server, token, 5)
    assert value(scrape(server + "/metrics"), *GET_TASK_OK) - before == 45


@pytest.mark.deep  # several server processes: `make test-deep`
@pytest.mark.parametrize("workers", [2])
def test_a_worker_that_died_is_no_longer_counted(
    server: str, token: str, tmp_path: Path, workers: int
) -> None:
    log = tmp_path / "server.log"
    # `server` has waited for both workers to answer.
    first, _second = started_pids(log)
    os.kill(first, signal.SIGKILL)
    # uvicorn starts a worker in its place.
    deadline = time.monotonic() + 20
    while len(started_pids(log)) < 3:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(POLL_SECONDS)
    read_tasks(server, token, 4)
    # The dead worker's pool is gone from the live figures: two workers' pools, not three.
    assert value(scrape(server + "/metrics"), "nico_db_connections_max") == 8


@pytest.mark.deep  # several server processes: `make test-deep`
def test_a_server_stopped_with_sigterm_removes_its_metrics_folder(
    env: dict[str, str], tmp_path: Path
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    port = free_port()
    command = [NICO_API, "serve", "--port", str(port)]
    with serving(command, {**env, "TMPDIR": str(scratch)}, tmp_path / "server.log", port) as url:
        assert httpx.get(url + "/metrics").status_code == 200
        assert [p.name[:13] for p in scratch.iterdir()] == ["nico-metrics-"]
    # `serving` stops it with SIGTERM.
    assert list(scratch.iterdir()) == []


@pytest.fixture
def metrics_port_server(
    app: NICoApp, env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[str, str]]:
    """`nico-api serve` (two workers) over the demo data (`app`), its metrics on a port of their
    own: its base URL and its metrics URL."""
    port, metrics_port = free_port(), free_port()
    command = [NICO_API, "serve", "--port", str(port), "--workers", "2"]
    own_port = {**env, "NICO_METRICS_PORT": str(metrics_port)}
    with serving(command, own_port, tmp_path / "server.log", port, workers=2) as base_url:
        yield base_url, f"http://127.0.0.1:{metrics_port}/metrics"


@pytest.mark.deep  # several server processes: `make test-deep`
def test_metrics_on_a_port_of_their_own(metrics_port_server: tuple[str, str], token: str) -> None:
    base_url, metrics_url = metrics_port_server
    assert httpx.get(base_url + "/metrics").status_code == 404
    read_tasks(base_url, token, 10)
    assert value(scrape(metrics_url), *GET_TASK_OK) == 10
