"""A client's whole lifecycle over real HTTP: `nico-api serve` and `nico-api flow` as processes
sharing the test's database (SQLite and PostgreSQL). Create, poll, watch the report, cancel,
queue; and the Flow process killed at any point and started again."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select

from nico_api.storage.models import Task
from tests.demo import (
    ACME,
    ACME_SITE,
    ACME_SITE_2,
    FAILING_RACK,
    FAILING_TRAY,
    FAILURE,
    FREE_RACK,
    OTHER_FREE_RACK,
    RACK,
)
from tests.fixtures import in_flight_together, orders_logged
from tests.processes import NICO_API, free_port, run, serving

# Whole lifecycles over real processes: `make test-deep` runs them.
pytestmark = pytest.mark.deep

STEP_SECONDS = "0.1"


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    """Flow's steps a tenth of a second apart, looked for every 20 ms."""
    return {**env, "NICO_FLOW_STEP_SECONDS": STEP_SECONDS, "NICO_FLOW_POLL_SECONDS": "0.02"}


@pytest.fixture
def token(env: dict[str, str]) -> str:
    return run(env, "token", "--org", ACME, "--role", "PROVIDER_ADMIN").stdout.strip()


class FlowProcess:
    """`nico-api flow`, which can be killed and started again; its log lines, every run's."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("a") as out:
            self.process = subprocess.Popen(
                [NICO_API, "flow", "--log-level", "debug"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        assert self.process is not None and self.process.poll() is None, self.log.read_text()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)

    def wait_started(self, runs: int, timeout: float = 30) -> None:
        """Until the log shows that the process has started `runs` times."""
        deadline = time.monotonic() + timeout
        while sum(1 for line in self.lines() if line["message"] == "flow started") < runs:
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.02)

    def lines(self) -> list[dict[str, Any]]:
        return [
            json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")
        ]


@pytest.fixture
def flow(env: dict[str, str], server: str, tmp_path: Path) -> Iterator[FlowProcess]:
    process = FlowProcess(env, tmp_path / "flow.log")
    process.start()
    yield process
    process.stop()


class Client:
    """A NICo client of the server, as a user's code would be."""

    def __init__(self, base_url: str, token: str) -> None:
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"})

    def create(self, path: str, body: dict[str, Any], method: str = "PATCH") -> httpx.Response:
        return self.http.request(
            method, f"/v2/org/{ACME}/nico/{path}", json={"siteId": ACME_SITE, **body}
        )

    def power(self, rack: str, state: str = "On") -> list[str]:
        response = self.create(f"rack/{rack}/power", {"state": state})
        assert response.status_code == 200, response.text
        return response.json()["taskIds"]

    def task(self, task_id: str, site: str = ACME_SITE) -> dict[str, Any]:
        response = self.http.get(f"/v2/org/{ACME}/nico/task/{task_id}", params={"siteId": site})
        assert response.status_code == 200, response.text
        return response.json()

    def cancel(self, task_id: str) -> httpx.Response:
        return self.http.post(
            f"/v2/org/{ACME}/nico/task/{task_id}/cancel", json={"siteId": ACME_SITE}
        )

    def poll(
        self,
        task_id: str,
        done: Callable[[dict[str, Any]], bool],
        timeout: float = 30,
        site: str = ACME_SITE,
    ) -> list[dict[str, Any]]:
        """The task as seen every 50 ms until `done` holds of it."""
        seen, deadline = [], time.monotonic() + timeout
        while True:
            seen.append(self.task(task_id, site))
            if done(seen[-1]):
                return seen
            assert time.monotonic() < deadline, seen[-1]
            time.sleep(0.05)


def when(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp)


def finished(task: dict[str, Any]) -> bool:
    return task["status"] in ("Succeeded", "Failed", "Terminated")


@pytest.fixture
def client(server: str, token: str) -> Client:
    return Client(server, token)


def test_create_poll_and_watch_a_task_succeed(client: Client, flow: FlowProcess) -> None:
    (task_id,) = client.power(FREE_RACK)
    seen = client.poll(task_id, finished)
    statuses = [t["status"] for t in seen]
    assert statuses[-1] == "Succeeded" and "Running" in statuses
    assert statuses.index("Running") < len(statuses) - 1  # seen running before it succeeded
    final = seen[-1]
    assert final["message"] == "Succeeded" and final["started"] and final["finished"]
    stages = final["report"]["stages"]
    assert [(s["number"], s["steps"][0]["componentType"]) for s in stages] == [
        (1, "PowerShelf"),
        (2, "NVSwitch"),
        (3, "Compute"),
    ]
    assert all(s["status"] == "completed" for s in stages)
    assert [when(s["startedAt"]) for s in stages] == sorted(when(s["startedAt"]) for s in stages)
    # The report filled in while the task ran: some poll saw stage 1 done and stage 3 pending.
    assert any(
        t.get("report")
        and t["report"]["stages"][0]["status"] == "completed"
        and t["report"]["stages"][2]["status"] == "pending"
        for t in seen
    )


def test_a_declared_failure_ends_failed(client: Client, flow: FlowProcess) -> None:
    (task_id,) = client.power(FAILING_RACK, "Off")
    final = client.poll(task_id, finished)[-1]
    error = f"component type Compute failed: {FAILING_TRAY}: {FAILURE}"
    assert (final["status"], final["message"]) == ("Failed", f"stage 1 failed: {error}")
    assert final["report"]["error"] == error
    assert [s["status"] for s in final["report"]["stages"]] == ["failed", "pending", "pending"]


def test_a_cancel_mid_run_terminates_and_nothing_is_written_after(
    client: Client, flow: FlowProcess
) -> None:
    (task_id,) = client.power(FREE_RACK, "Cycle")  # six stages: a few seconds of work
    client.poll(
        task_id, lambda t: bool(t.get("report")) and t["report"]["stages"][0]["status"] != "pending"
    )
    cancelled = client.cancel(task_id)
    assert cancelled.status_code == 202, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["message"]) == (
        "Terminated",
        "Cancelled by user",
    )
    # A task begun after the cancel, run to its end: Flow has stepped many times since.
    (witness,) = client.power(OTHER_FREE_RACK, "On")
    client.poll(witness, finished)
    assert client.task(task_id) == cancelled.json()


def test_two_requests_for_one_rack_run_one_after_the_other(
    client: Client, flow: FlowProcess
) -> None:
    (first,) = client.power(OTHER_FREE_RACK)
    (second,) = client.power(OTHER_FREE_RACK, "Off")
    waiting = client.task(second)
    assert (waiting["status"], waiting["message"]) == (
        "Pending",
        "Queued: waiting for rack to become available",
    )
    first_done = client.poll(first, finished)[-1]
    second_seen = client.poll(second, finished)
    assert first_done["status"] == second_seen[-1]["status"] == "Succeeded"
    assert when(second_seen[-1]["started"]) >= when(first_done["finished"])


def test_a_sixth_queued_request_is_refused(client: Client, flow: FlowProcess) -> None:
    # R-14 runs a task that never ends: its queue fills.
    queued = [client.power(RACK, "Off")[0] for _ in range(5)]
    assert all(client.task(t)["message"].startswith("Queued") for t in queued)
    sixth = client.create(f"rack/{RACK}/power", {"state": "Off"})
    assert sixth.status_code == 500
    assert sixth.json() == {"source": "nico", "message": "failed to create any tasks", "data": None}


def test_identical_requests_in_flight_return_the_same_task_ids(
    client: Client, env: dict[str, str], tmp_path: Path
) -> None:
    engine = create_engine(env["NICO_DATABASE_URL"])
    try:
        answers = in_flight_together(
            lambda: client.create(f"rack/{FREE_RACK}/power", {"state": "On"}),
            lambda: client.create(f"rack/{FREE_RACK}/power", {"state": "On"}),
            engine=engine,
            racks=[FREE_RACK],
            received=lambda: orders_logged(tmp_path / "server.log"),
        )
    finally:
        engine.dispose()
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json() == answers[1].json() and len(answers[0].json()["taskIds"]) == 1


def test_an_expired_waiting_task_is_terminated(
    env: dict[str, str], token: str, tmp_path: Path
) -> None:
    quick = {**env, "NICO_FLOW_QUEUE_TIMEOUT": "1"}
    port = free_port()
    command = [NICO_API, "serve", "--port", str(port)]
    with serving(command, quick, tmp_path / "server.log", port) as base_url:
        run(quick, "db", "seed", "--demo")
        process = FlowProcess(quick, tmp_path / "flow.log")
        process.start()
        try:
            client = Client(base_url, token)
            (waiting,) = client.power(RACK)  # R-14 never frees
            final = client.poll(waiting, finished, timeout=30)[-1]
        finally:
            process.stop()
    assert (final["status"], final["message"]) == ("Terminated", "Expired: queue timeout reached")
    assert final["started"] is None and final["finished"] is not None


@pytest.mark.parametrize("workers", [2])
def test_flow_killed_mid_stage_and_started_again_finishes_every_task_once(
    client: Client, flow: FlowProcess, env: dict[str, str], workers: int
) -> None:
    # Several server processes and one Flow process share the database.
    ids = client.create(
        "rack/power", {"state": "Cycle", "filter": {"names": ["R-15", "R-09", "R-02"]}}
    ).json()["taskIds"]
    other_site = client.http.patch(
        f"/v2/org/{ACME}/nico/rack/firmware", json={"siteId": ACME_SITE_2, "version": "9"}
    ).json()["taskIds"]
    assert len(ids) == 3 and len(other_site) == 2
    for kills, pause in enumerate((0.35, 0.5, 0.25, 0.6), start=1):
        flow.wait_started(kills)
        time.sleep(pause)
        flow.kill()
        flow.start()
    finals = {t: client.poll(t, finished, timeout=60)[-1] for t in ids}
    finals |= {t: client.poll(t, finished, timeout=60, site=ACME_SITE_2)[-1] for t in other_site}
    # The tasks can finish before the last start has logged; it is stopped once it has.
    flow.wait_started(5)
    flow.stop()
    written = Counter(
        (line["task"], line["step"]) for line in flow.lines() if line["message"] == "step written"
    )
    assert written and max(written.values()) == 1, [k for k, n in written.items() if n > 1]
    assert sum(1 for line in flow.lines() if line["message"] == "flow started") == 5
    statuses = Counter(t["status"] for t in finals.values())
    assert statuses == Counter({"Succeeded": 4, "Failed": 1})  # R-09's compute tray fails
    for task_id, final in finals.items():
        stages = final["report"]["stages"]
        if final["status"] == "Succeeded":
            assert all(s["status"] == "completed" for s in stages)
            # Firmware steps count their components; power steps count none.
            assert all(
                step["succeededComponents"]
                == (step["totalComponents"] if task_id in other_site else 0)
                for s in stages
                for step in s["steps"]
            )
        else:
            failed = [s["status"] for s in stages]
            assert failed[0] == "failed" and set(failed[1:]) == {"pending"}
    # Every step of every task was run, none lost across the kills: the restart (six stages of
    # two steps) and the firmware update (two stages of three) to their last step, R-09's until
    # its first stage failed.
    engine = create_engine(env["NICO_DATABASE_URL"])
    try:
        with engine.connect() as c:
            progress = dict(c.execute(select(Task.id, Task.progress)).all())
    finally:
        engine.dispose()
    assert sorted(progress[uuid.UUID(t)] for t in finals) == [3, 7, 7, 13, 13]
    assert {t for t, _ in written} <= set(finals)


def test_a_second_flow_process_refuses_to_start(flow: FlowProcess, env: dict[str, str]) -> None:
    flow.wait_started(1)
    second = run(env, "flow", timeout=30)
    assert second.returncode == 1
    assert "error: another Flow process runs against this database" in second.stderr
