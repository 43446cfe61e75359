"""The simulated NICo Flow, driven step by step in process: how a task's status, message and
report evolve (docs/flow.md), failures, cancels, queues, and each step written once."""

from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from nico_api import logs
from nico_api.config import Settings
from nico_api.flow.executor import Executor
from nico_api.storage import fixture
from nico_api.storage.db import Storage
from nico_api.storage.models import Rack, Task, Tray, utcnow
from tests.demo import (
    ACME_SITE,
    FAILING_RACK,
    FAILING_TRAY,
    FAILURE,
    FREE_RACK,
    OTHER_FREE_RACK,
    RACK,
)
from tests.fixtures import Bearer
from tests.test_create_tasks import call, power, stored, task

SECOND = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@pytest.fixture
def flow(storage: Storage, settings: Settings) -> Executor:
    """A Flow executor over the test's database whose steps are due at once."""
    return Executor(storage, settings.model_copy(update={"flow_step_seconds": 0}))


def drive(flow: Executor, steps: int = 100) -> None:
    """Run Flow until nothing is due (or `steps` passes)."""
    for _ in range(steps):
        flow.sweep()
        if not flow.run_due():
            return


def step(flow: Executor) -> None:
    assert flow.run_due() >= 1


def test_a_power_on_runs_to_succeeded(
    client: TestClient, bearer: Bearer, flow: Executor, storage: Storage
) -> None:
    (task_id,) = power(client, bearer(), FREE_RACK).json()["taskIds"]
    step(flow)
    started = task(client, bearer(), task_id)
    assert (started["status"], started["message"]) == ("Running", "Running")
    assert started["started"] is not None and started["finished"] is None
    # The initial report: every stage pending, each step with its total.
    assert started["report"] == {
        "version": 1,
        "stages": [
            {
                "number": n,
                "status": "pending",
                "steps": [
                    {
                        "componentType": kind,
                        "status": "pending",
                        "totalComponents": total,
                        "succeededComponents": 0,
                        "failedComponents": 0,
                    }
                ],
            }
            for n, (kind, total) in enumerate(
                [("PowerShelf", 2), ("NVSwitch", 2), ("Compute", 4)], start=1
            )
        ],
    }
    step(flow)
    begun = task(client, bearer(), task_id)["report"]["stages"]
    assert [s["status"] for s in begun] == ["running", "pending", "pending"]
    assert SECOND.fullmatch(begun[0]["startedAt"])
    assert begun[0]["steps"][0]["startedAt"] == begun[0]["startedAt"]
    step(flow)
    ended = task(client, bearer(), task_id)["report"]["stages"]
    assert [s["status"] for s in ended] == ["completed", "pending", "pending"]
    drive(flow)
    done = task(client, bearer(), task_id)
    assert (done["status"], done["message"]) == ("Succeeded", "Succeeded")
    assert done["finished"] is not None and done["started"] == started["started"]
    stages = done["report"]["stages"]
    assert [s["status"] for s in stages] == ["completed"] * 3
    assert all(s["steps"][0]["succeededComponents"] == 0 for s in stages)
    assert [s["startedAt"] for s in stages] == sorted(s["startedAt"] for s in stages)
    assert "error" not in done["report"]
    row = stored(storage, task_id)
    assert (row.progress, row.due_at) == (7, None)  # the start and two steps per stage


def test_a_declared_failure_fails_the_stage_and_the_task(
    client: TestClient, bearer: Bearer, flow: Executor
) -> None:
    # R-09 declares a compute tray that does not come back; powering off starts with compute.
    (task_id,) = power(client, bearer(), FAILING_RACK, "Off").json()["taskIds"]
    drive(flow)
    failed = task(client, bearer(), task_id)
    error = f"component type Compute failed: {FAILING_TRAY}: {FAILURE}"
    assert (failed["status"], failed["message"]) == ("Failed", f"stage 1 failed: {error}")
    assert failed["finished"] is not None
    first, *later = failed["report"]["stages"]
    assert (first["status"], first["error"]) == ("failed", error)
    assert first["steps"][0] | {"startedAt": None, "finishedAt": None} == {
        "componentType": "Compute",
        "status": "failed",
        "totalComponents": 4,
        "succeededComponents": 0,
        "failedComponents": 0,
        "error": error,
        "startedAt": None,
        "finishedAt": None,
    }
    assert [s["status"] for s in later] == ["pending", "pending"]
    assert failed["report"]["error"] == error


def test_a_seeded_failure_rate_fails_tasks(
    client: TestClient, bearer: Bearer, storage: Storage, settings: Settings
) -> None:
    always = Executor(
        storage, settings.model_copy(update={"flow_step_seconds": 0, "flow_failure_rate": 1.0})
    )
    (task_id,) = power(client, bearer(), FREE_RACK).json()["taskIds"]
    drive(always)
    failed = task(client, bearer(), task_id)
    assert failed["status"] == "Failed"
    assert failed["message"].startswith("stage 1 failed: component type PowerShelf failed: ")
    assert failed["message"].endswith(": simulated failure")


def test_a_cancel_mid_run_stops_the_execution(
    client: TestClient, bearer: Bearer, flow: Executor, storage: Storage
) -> None:
    (task_id,) = power(client, bearer(), FREE_RACK).json()["taskIds"]
    for _ in range(2):
        step(flow)  # the start, and the first stage begun
    cancelled = client.post(
        f"/v2/org/acme-inc/nico/task/{task_id}/cancel", json={"siteId": ACME_SITE}, headers=bearer()
    ).json()
    assert (cancelled["status"], cancelled["message"]) == ("Terminated", "Cancelled by user")
    before = stored(storage, task_id)
    drive(flow)
    after = stored(storage, task_id)
    # No later write: the report stays at its last snapshot, a stage still running.
    assert (after.progress, after.updated_at, after.report) == (
        before.progress,
        before.updated_at,
        before.report,
    )
    assert after.report["stages"][0]["status"] == "running"


def test_the_oldest_waiting_task_is_promoted_when_the_rack_is_free(
    client: TestClient, bearer: Bearer, flow: Executor
) -> None:
    (first,) = power(client, bearer(), FREE_RACK).json()["taskIds"]
    (second,) = power(client, bearer(), FREE_RACK, "Off").json()["taskIds"]
    (third,) = power(client, bearer(), FREE_RACK, "Cycle").json()["taskIds"]
    for _ in range(7):
        step(flow)
    assert task(client, bearer(), first)["status"] == "Succeeded"
    promoted = task(client, bearer(), second)
    assert (promoted["status"], promoted["message"]) == (
        "Pending",
        "Promoted: no conflicting active tasks",
    )
    assert (
        task(client, bearer(), third)["message"] == "Queued: waiting for rack to become available"
    )
    drive(flow)
    assert [task(client, bearer(), t)["status"] for t in (second, third)] == ["Succeeded"] * 2


def test_a_cancel_frees_the_rack_for_the_next_task(
    client: TestClient, bearer: Bearer, flow: Executor
) -> None:
    (first,) = power(client, bearer(), FREE_RACK).json()["taskIds"]
    (second,) = power(client, bearer(), FREE_RACK, "Off").json()["taskIds"]
    step(flow)
    client.post(
        f"/v2/org/acme-inc/nico/task/{first}/cancel", json={"siteId": ACME_SITE}, headers=bearer()
    )
    drive(flow)
    assert task(client, bearer(), second)["status"] == "Succeeded"


def test_a_waiting_task_expires(
    client: TestClient, bearer: Bearer, flow: Executor, storage: Storage
) -> None:
    # R-14 runs a task that never ends: its queue only empties by expiry.
    (waiting,) = power(client, bearer(), RACK).json()["taskIds"]
    flow.sweep()
    assert stored(storage, waiting).status == "waiting"
    flow.sweep(utcnow() + timedelta(hours=1, seconds=1))
    expired = task(client, bearer(), waiting)
    assert (expired["status"], expired["message"]) == (
        "Terminated",
        "Expired: queue timeout reached",
    )
    assert expired["finished"] is not None and expired["started"] is None
    assert stored(storage, waiting).queue_expires_at is None


def test_a_rule_without_steps_fails_without_a_report(
    client: TestClient, bearer: Bearer, flow: Executor, storage: Storage
) -> None:
    rule = str(uuid.uuid4())
    fixture.load(
        storage,
        fixture.FixtureFile.model_validate(
            {
                "rules": [
                    {
                        "id": rule,
                        "site_id": ACME_SITE,
                        "name": "Empty",
                        "operation": "power_on",
                        "stages": [],
                    }
                ]
            }
        ),
    )
    response = power(client, bearer(), FREE_RACK, ruleId=rule)
    # A rule with no step applies to nothing the request targets.
    assert response.status_code == 412


def test_each_step_is_written_once_by_two_executors(
    client: TestClient, bearer: Bearer, storage: Storage, settings: Settings
) -> None:
    # Two executors read the same due steps: the one that writes a step first wins it.
    (task_id,) = power(client, bearer(), FREE_RACK).json()["taskIds"]
    one = Executor(storage, settings.model_copy(update={"flow_step_seconds": 0}))
    two = Executor(storage, settings.model_copy(update={"flow_step_seconds": 0}))
    with storage.connection() as c:
        due = c.execute(select(Task).where(Task.id == uuid.UUID(task_id))).one()
    for executor in (one, two):
        with storage.connection() as c, c.begin():
            executor._step(c, due, utcnow())
    assert stored(storage, task_id).progress == 1
    drive(one)
    drive(two)
    assert stored(storage, task_id).progress == 7


def test_a_batch_of_steps_skips_the_task_cancelled_since_it_was_read(
    client: TestClient, bearer: Bearer, storage: Storage, flow: Executor
) -> None:
    # Steps are written many rows to a statement: the one not written is told apart.
    (kept,) = power(client, bearer(), FREE_RACK).json()["taskIds"]
    (cancelled,) = power(client, bearer(), OTHER_FREE_RACK).json()["taskIds"]
    assert flow.run_due() == 2  # both started
    ids = [uuid.UUID(kept), uuid.UUID(cancelled)]
    with storage.connection() as c:
        due = c.execute(select(Task).where(Task.id.in_(ids)).order_by(Task.id)).all()
    client.post(
        f"/v2/org/acme-inc/nico/task/{cancelled}/cancel",
        json={"siteId": ACME_SITE},
        headers=bearer(),
    ).raise_for_status()
    with storage.connection() as c, c.begin():
        outcomes = flow._write_steps(c, due, utcnow())
    written = {row.id: finished for row, (finished, _) in zip(due, outcomes, strict=True)}
    assert written == {uuid.UUID(kept): False, uuid.UUID(cancelled): None}
    assert (stored(storage, kept).progress, stored(storage, cancelled).progress) == (2, 1)
    assert stored(storage, cancelled).status == "terminated"


def test_an_executor_started_afresh_continues_from_the_stored_state(
    client: TestClient, bearer: Bearer, storage: Storage, settings: Settings
) -> None:
    (task_id,) = power(client, bearer(), FREE_RACK).json()["taskIds"]
    first = Executor(storage, settings.model_copy(update={"flow_step_seconds": 0}))
    for _ in range(4):
        step(first)
    report = task(client, bearer(), task_id)["report"]
    drive(Executor(storage, settings.model_copy(update={"flow_step_seconds": 0})))
    done = task(client, bearer(), task_id)
    assert done["status"] == "Succeeded"
    assert done["report"]["stages"][0]["startedAt"] == report["stages"][0]["startedAt"]


def test_steps_are_due_at_the_configured_pace(
    client: TestClient, bearer: Bearer, storage: Storage, settings: Settings
) -> None:
    paced = Executor(storage, settings.model_copy(update={"flow_step_seconds": 30}))
    (task_id,) = power(client, bearer(), FREE_RACK).json()["taskIds"]
    assert paced.run_due() == 1
    assert paced.run_due() == 0  # the next step is 30 s away
    row = stored(storage, task_id)
    assert 29 <= (row.due_at - row.updated_at).total_seconds() <= 30
    with storage.engine.begin() as c:
        c.execute(update(Task).where(Task.id == uuid.UUID(task_id)).values(due_at=utcnow()))
    assert paced.run_due() == 1
    summary = paced.lag_summary()
    assert summary["steps"] == 2 and summary["start_p50_ms"] >= 0 and summary["step_max_ms"] >= 0


def test_a_task_past_its_queue_time_is_not_promoted(
    client: TestClient, bearer: Bearer, flow: Executor, storage: Storage
) -> None:
    (first,) = power(client, bearer(), FREE_RACK).json()["taskIds"]
    (second,) = power(client, bearer(), FREE_RACK, "Off").json()["taskIds"]
    with storage.engine.begin() as c:
        c.execute(
            update(Task).where(Task.id == uuid.UUID(second)).values(queue_expires_at=utcnow())
        )
    for _ in range(7):
        step(flow)  # the first task's steps: its end frees the rack, and ends what expired
    assert stored(storage, first).status == "completed"
    assert task(client, bearer(), second)["message"] == "Expired: queue timeout reached"


def test_a_long_failure_is_cut_to_512_bytes(
    client: TestClient, bearer: Bearer, flow: Executor, storage: Storage
) -> None:
    with storage.engine.begin() as c:
        c.execute(update(Rack).where(Rack.external_id == FREE_RACK).values(failure="é" * 600))
    (task_id,) = power(client, bearer(), FREE_RACK).json()["taskIds"]
    drive(flow)
    failed = task(client, bearer(), task_id)
    stage = failed["report"]["stages"][0]
    assert failed["status"] == "Failed"
    assert failed["message"].startswith("stage 1 failed: component type PowerShelf failed: é")
    assert len(failed["message"].encode()) <= 512
    for text in (
        failed["report"]["error"],
        stage["error"],
        stage["steps"][0]["error"],
    ):
        assert len(text.encode()) <= 512 and text.startswith("component type PowerShelf failed: é")


# Production's Flow, row by row (the contract's `flow` rows).


def compute_tray(storage: Storage, rack: str) -> str:
    """The external id of a compute tray of the rack named by its external id."""
    with storage.connection() as c:
        return c.scalars(
            select(Tray.external_id)
            .join(Rack, Rack.id == Tray.rack_id)
            .where(Rack.external_id == rack, Tray.type == "Compute", Tray.failure.is_(None))
            .order_by(Tray.slot)
        ).first()


def power_tray(client: TestClient, headers: dict[str, str], tray: str, state: str = "On") -> str:
    response = call(client, headers, f"tray/{tray}/power", {"siteId": ACME_SITE, "state": state})
    assert response.status_code == 200, response.text
    (task_id,) = response.json()["taskIds"]
    return task_id


def snapshots(client: TestClient, bearer: Bearer, flow: Executor, task_id: str) -> list[Any]:
    """The task's report after each step Flow writes, until it finishes."""
    seen = []
    while flow.run_due():
        seen.append(task(client, bearer(), task_id)["report"])
    return seen


def test_flow_1_a_failed_tasks_message_names_its_stage(
    client: TestClient, bearer: Bearer, flow: Executor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nico_api.flow")
    # A power on of R-09's failing compute tray: compute is the rule's third stage.
    task_id = power_tray(client, bearer(), FAILING_TRAY)
    drive(flow)
    failed = task(client, bearer(), task_id)
    error = f"component type Compute failed: {FAILING_TRAY}: {FAILURE}"
    assert (failed["status"], failed["message"]) == ("Failed", f"stage 3 failed: {error}")
    # The report keeps the stage's error as it was: the workflow's error wraps it.
    assert failed["report"]["error"] == error
    assert failed["report"]["stages"][2]["error"] == error
    # Its log line is still the event, the task's message beside it.
    (ended,) = [
        json.loads(logs.JsonFormatter().format(record))
        for record in caplog.records
        if getattr(record, "fields", {}).get("task") == task_id and "error" in record.fields
    ]
    assert (ended["message"], ended["status"]) == ("task ended", "failed")
    assert ended["error"] == f"stage 3 failed: {error}"


def test_flow_2_power_reports_count_no_components(
    client: TestClient, bearer: Bearer, flow: Executor
) -> None:
    (on,) = power(client, bearer(), FREE_RACK).json()["taskIds"]
    (off,) = power(client, bearer(), FAILING_RACK, "Off").json()["taskIds"]
    (up,) = call(
        client, bearer(), f"rack/{OTHER_FREE_RACK}/bringup", {"siteId": ACME_SITE}, "POST"
    ).json()["taskIds"]
    drive(flow)
    for task_id, status in ((on, "Succeeded"), (off, "Failed"), (up, "Succeeded")):
        final = task(client, bearer(), task_id)
        assert final["status"] == status
        steps = [step for stage in final["report"]["stages"] for step in stage["steps"]]
        assert {(s["succeededComponents"], s["failedComponents"]) for s in steps} == {(0, 0)}
        assert all(s["totalComponents"] > 0 for s in steps)


def test_flow_2_firmware_steps_count_their_components(
    client: TestClient, bearer: Bearer, flow: Executor
) -> None:
    (task_id,) = call(
        client, bearer(), f"rack/{FREE_RACK}/firmware", {"siteId": ACME_SITE, "version": "2"}
    ).json()["taskIds"]
    seen = snapshots(client, bearer, flow, task_id)
    final = task(client, bearer(), task_id)
    assert final["status"] == "Succeeded"
    steps = [step for stage in final["report"]["stages"] for step in stage["steps"]]
    assert steps and all(s["succeededComponents"] == s["totalComponents"] > 0 for s in steps)
    # Firmware steps report progress while they run: some of a stage's components done.
    assert any(
        stage["status"] == "running" and 0 < step["succeededComponents"] < step["totalComponents"]
        for report in seen
        for stage in report["stages"]
        for step in stage["steps"]
    )


def test_flow_3_a_stage_with_no_targeted_component_is_begun_and_completed(
    client: TestClient, bearer: Bearer, flow: Executor, storage: Storage
) -> None:
    # A compute tray's power on: the rule's power shelf and switch stages target nothing.
    task_id = power_tray(client, bearer(), compute_tray(storage, FREE_RACK))
    step(flow)
    started = task(client, bearer(), task_id)["report"]["stages"]
    assert [s["status"] for s in started] == ["pending"] * 3
    assert [s["steps"][0]["status"] for s in started] == ["skipped", "skipped", "pending"]
    drive(flow)
    done = task(client, bearer(), task_id)
    assert done["status"] == "Succeeded"
    empty, *_ = stages = done["report"]["stages"]
    assert [s["status"] for s in stages] == ["completed"] * 3
    for stage in stages[:2]:
        assert SECOND.fullmatch(stage["startedAt"]) and SECOND.fullmatch(stage["finishedAt"])
        assert stage["steps"] == [
            {
                "componentType": stage["steps"][0]["componentType"],
                "status": "skipped",
                "totalComponents": 0,
                "succeededComponents": 0,
                "failedComponents": 0,
            }
        ]
    assert empty["startedAt"] <= stages[2]["startedAt"]
    assert stored(storage, task_id).progress == 7  # the start, and each stage begun and ended


def test_flow_4_expiry_waits_for_the_promoters_sweep_when_production_paced(
    client: TestClient, bearer: Bearer, storage: Storage, settings: Settings
) -> None:
    paced = Executor(
        storage,
        settings.model_copy(update={"flow_step_seconds": 0, "flow_promoter_sweep_seconds": 300}),
    )
    paced.promoter(clock=0.0)  # a promoter sweeps as it starts
    # R-14 runs a task that never ends: its queue empties by expiry alone.
    (waiting,) = power(client, bearer(), RACK).json()["taskIds"]
    with storage.engine.begin() as c:
        c.execute(
            update(Task).where(Task.id == uuid.UUID(waiting)).values(queue_expires_at=utcnow())
        )
    for clock in (1.0, 2.0, 299.0):
        paced.promoter(clock)
        assert stored(storage, waiting).status == "waiting"  # past its time, until the sweep
    paced.promoter(300.0)
    expired = task(client, bearer(), waiting)
    assert (expired["status"], expired["message"]) == (
        "Terminated",
        "Expired: queue timeout reached",
    )


def test_flow_4_expiry_is_prompt_by_default(
    client: TestClient, bearer: Bearer, flow: Executor, storage: Storage
) -> None:
    assert flow.settings.flow_promoter_sweep_seconds == 1.0
    flow.promoter(clock=0.0)
    (waiting,) = power(client, bearer(), RACK).json()["taskIds"]
    with storage.engine.begin() as c:
        c.execute(
            update(Task).where(Task.id == uuid.UUID(waiting)).values(queue_expires_at=utcnow())
        )
    flow.promoter(clock=1.0)
    assert stored(storage, waiting).message == "Expired: queue timeout reached"


def test_a_cancel_frees_its_rack_between_sweeps(
    client: TestClient, bearer: Bearer, storage: Storage, settings: Settings
) -> None:
    # Flow's promoter is told of every task's end, a cancel's too: no wait for the sweep.
    paced = Executor(
        storage,
        settings.model_copy(update={"flow_step_seconds": 0, "flow_promoter_sweep_seconds": 300}),
    )
    (first,) = power(client, bearer(), FREE_RACK).json()["taskIds"]
    (second,) = power(client, bearer(), FREE_RACK, "Off").json()["taskIds"]
    paced.promoter(clock=0.0)
    step(paced)
    client.post(
        f"/v2/org/acme-inc/nico/task/{first}/cancel", json={"siteId": ACME_SITE}, headers=bearer()
    )
    paced.promoter(clock=0.5)  # not yet a look
    assert stored(storage, second).status == "waiting"
    paced.promoter(clock=1.0)
    assert task(client, bearer(), second)["message"] == "Promoted: no conflicting active tasks"


def test_flow_5_power_snapshots_at_stage_start_and_end_only(
    client: TestClient, bearer: Bearer, flow: Executor
) -> None:
    (task_id,) = power(client, bearer(), FREE_RACK).json()["taskIds"]
    seen = snapshots(client, bearer, flow, task_id)
    assert [[stage["status"] for stage in report["stages"]] for report in seen] == [
        ["pending", "pending", "pending"],
        ["running", "pending", "pending"],
        ["completed", "pending", "pending"],
        ["completed", "running", "pending"],
        ["completed", "completed", "pending"],
        ["completed", "completed", "running"],
        ["completed", "completed", "completed"],
    ]
