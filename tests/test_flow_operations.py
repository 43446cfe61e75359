"""The simulated Flow's seams and records: it imports nothing of the web or error layers and
answers outcome codes, which the REST side maps to statuses as production's REST layer maps
Flow's gRPC codes; each operation is one declared record; each task event is one JSON line."""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

import pytest
from starlette.testclient import TestClient

import nico_api
from nico_api import logs
from nico_api.config import Settings
from nico_api.flow import operations
from nico_api.flow.executor import Executor
from nico_api.flow.manager import Work
from nico_api.flow.operations import BY_NAME, Conflict
from nico_api.storage.db import Storage
from nico_api.vocabulary import Code
from nico_api.wire import submissions
from nico_api.wire.errors import flow_status
from tests.demo import FREE_RACK
from tests.fixtures import Bearer
from tests.test_create_tasks import power

PACKAGE = Path(nico_api.__file__).parent
FLOW_SIDE = [*sorted((PACKAGE / "flow").glob("*.py")), PACKAGE / "vocabulary.py"]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", FLOW_SIDE, ids=lambda p: p.name)
def test_flow_imports_nothing_of_the_web_or_error_layers(path: Path) -> None:
    outside = {
        name
        for name in imported_modules(path)
        if name.startswith(("nico_api.web", "nico_api.wire", "nico_api.auth", "handlers"))
        or name in ("nico_api.store", "connexion", "starlette")
        or name.startswith(("connexion.", "starlette."))
    }
    assert outside == set()


def test_the_rest_side_maps_flows_codes_as_production_does() -> None:
    # Production's UnwrapWorkflowError: the codes Flow answers here, and anything else a 500.
    assert {code: flow_status(code) for code in Code} == {
        Code.INVALID_ARGUMENT: 400,
        Code.NOT_FOUND: 404,
        Code.FAILED_PRECONDITION: 412,
        Code.RESOURCE_EXHAUSTED: 429,
        Code.INTERNAL: 500,
        Code.UNKNOWN: 500,
    }


def test_each_operation_is_one_record() -> None:
    assert operations.OPERATIONS == (
        "power_on",
        "power_off",
        "restart",
        "force_power_off",
        "force_restart",
        "cold_reset",
        "firmware_update",
        "bring_up",
    )
    assert {name: op.task_type for name, op in BY_NAME.items()} == {
        **dict.fromkeys(operations.OPERATIONS[:6], "power_control"),
        "firmware_update": "firmware_control",
        "bring_up": "bring_up",
    }
    assert all(op.rule.id is None and op.rule.stages for op in operations.DECLARED)
    assert [op.name for op in operations.DECLARED if op.step_progress] == ["firmware_update"]


@pytest.mark.parametrize("state", submissions.POWER_STATES)
@pytest.mark.parametrize("entity", ["Rack", "Tray"])
def test_a_power_records_workflow_ids_are_the_requests(entity: str, state: str) -> None:
    body = {"siteId": "s", "state": state, "filter": {"names": ["R-1"]}}
    one = submissions.power(body, entity, "T-1", "failed")
    batch = submissions.power(body, entity, None, "failed")
    operation = BY_NAME[one.submission["operation"]]
    assert one.workflow_id == operation.workflow_id(entity, "T-1")
    assert batch.workflow_id == operation.workflow_id(
        entity, None, submissions._hash(body["filter"])
    )


@pytest.mark.parametrize("entity", ["Rack", "Tray"])
def test_firmware_and_bring_up_records_workflow_ids_are_the_requests(entity: str) -> None:
    body = {"siteId": "s", "version": "1", "filter": {"names": ["R-1"]}}
    hashed = submissions._hash(body["filter"])
    firmware = BY_NAME["firmware_update"]
    assert submissions.firmware(body, entity, "T-1", "f").workflow_id == firmware.workflow_id(
        entity, "T-1"
    )
    assert submissions.firmware(body, entity, None, "f").workflow_id == firmware.workflow_id(
        entity, None, hashed
    )
    bring_up = BY_NAME["bring_up"]
    assert submissions.bring_up(body, "R-1", "f").workflow_id == bring_up.workflow_id("Rack", "R-1")
    assert submissions.bring_up(body, None, "f").workflow_id == bring_up.workflow_id(
        "Rack", None, hashed
    )


def test_each_operations_conflict_kind_is_declared() -> None:
    assert {op.name: op.conflict for op in operations.DECLARED} == {
        **dict.fromkeys(operations.OPERATIONS[:6], Conflict.POWER),
        "firmware_update": Conflict.FIRMWARE,
        "bring_up": Conflict.EXCLUSIVE,
    }
    # A stored task of an operation no record declares is never run beside anything.
    assert operations.conflict_of("decommission") is Conflict.EXCLUSIVE


def test_the_built_in_conflict_rule() -> None:
    compute = {"Compute": ["c1"]}
    other_compute = {"Compute": ["c2"]}
    shelves = {"PowerShelf": ["p1"]}
    power, firmware = Conflict.POWER, Conflict.FIRMWARE
    # Power and firmware work on different trays run side by side; on the same trays they do not.
    assert not Work(power, compute).conflicts_with(Work(firmware, other_compute))
    assert Work(power, compute).conflicts_with(Work(firmware, compute))
    # Power on the shelves excludes all power and firmware work on the rack.
    assert Work(power, shelves).conflicts_with(Work(firmware, other_compute))
    # Firmware work on shelves only excludes work on those shelves.
    assert not Work(firmware, shelves).conflicts_with(Work(firmware, compute))
    assert Work(firmware, shelves).conflicts_with(Work(firmware, shelves))
    assert Work(Conflict.EXCLUSIVE, {}).conflicts_with(Work(firmware, other_compute))


def test_each_task_event_is_one_json_line(
    client: TestClient,
    bearer: Bearer,
    flow: Executor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="nico_api.flow")
    (task_id,) = power(client, bearer(), FREE_RACK).json()["taskIds"]
    while flow.run_due():
        pass
    lines = [
        json.loads(logs.JsonFormatter().format(record))
        for record in caplog.records
        if record.name == "nico_api.flow"
    ]
    events = [(line["message"], line.get("stage")) for line in lines if line["task"] == task_id]
    assert events == [
        ("task submitted", None),
        ("task started", None),
        *[(event, n) for n in (1, 2, 3) for event in ("stage started", "stage finished")],
        ("task ended", None),
    ]
    rack = {line["rack"] for line in lines if line["task"] == task_id}
    assert len(rack) == 1 and rack != {"None"}
    assert lines[-1]["status"] == "completed"
    assert [line["status"] for line in lines if line["message"] == "stage finished"] == [
        "completed"
    ] * 3


@pytest.fixture
def flow(storage: Storage, settings: Settings) -> Executor:
    return Executor(storage, settings.model_copy(update={"flow_step_seconds": 0}))
