"""The operations that create tasks: each check of docs/contract.md in production's order,
with its message; the tasks made (one per rack, their description, message, rule and targets);
rack queues; and identical requests in flight answered alike."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from nico_api.config import Settings
from nico_api.flow.executor import Executor
from nico_api.logs import JsonFormatter
from nico_api.storage.db import Storage
from nico_api.storage.models import Task, TaskComponent
from nico_api.web.app import create_app
from nico_api.web.framework import NICoApp
from tests.demo import (
    ACME,
    ACME_LAB_SITE,
    ACME_SITE,
    ACME_SITE_2,
    COMPUTE_ONLY_RULE,
    FREE_RACK,
    GLOBEX,
    GLOBEX_SITE,
    OTHER_FREE_RACK,
    RACK,
    RULE,
    SITE_2_RACK,
    TRAY,
    TRAY_MAC,
    TRAY_RECORD,
)
from tests.fixtures import Bearer, in_flight_together, orders_received
from tests.test_list_tasks import assert_error

RACK_OPS = {
    "power": ("PATCH", {"state": "On"}, "Failed to validate power control request data"),
    "firmware": ("PATCH", {"version": "1.2"}, "Failed to validate firmware update request data"),
    "bringup": ("POST", {}, "Failed to validate bring up request data"),
}
TRAY_OPS = {k: v for k, v in RACK_OPS.items() if k != "bringup"}
R15_COMPONENTS = {"PowerShelf": 2, "NVSwitch": 2, "Compute": 4}


def call(
    client: TestClient,
    headers: dict[str, str],
    path: str,
    body: Any,
    method: str = "PATCH",
    org: str = ACME,
):
    return client.request(method, f"/v2/org/{org}/nico/{path}", json=body, headers=headers)


def power(client: TestClient, headers: dict[str, str], rack: str, state: str = "On", **extra):
    return call(
        client, headers, f"rack/{rack}/power", {"siteId": ACME_SITE, "state": state, **extra}
    )


def task(client: TestClient, headers: dict[str, str], task_id: str) -> dict[str, Any]:
    response = client.get(
        f"/v2/org/{ACME}/nico/task/{task_id}", params={"siteId": ACME_SITE}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()


def stored(storage: Storage, task_id: str) -> Any:
    with storage.connection() as c:
        return c.execute(select(Task).where(Task.id == uuid.UUID(task_id))).one()


# What the tasks made look like.


def test_a_rack_power_on_makes_one_pending_task(
    client: TestClient, bearer: Bearer, storage: Storage
) -> None:
    response = power(client, bearer(), FREE_RACK)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    (task_id,) = response.json()["taskIds"]
    made = task(client, bearer(), task_id)
    assert {k: made[k] for k in ("status", "description", "message", "ruleId")} == {
        "status": "Pending",
        "description": "API power on Rack",
        "message": "Pending",
        "ruleId": None,  # Flow's built-in rule
    }
    assert made["started"] is None and made["finished"] is None and "report" not in made
    row = stored(storage, task_id)
    assert (row.type, row.information) == ("power_control", {"operation": "power_on"})
    assert {
        t: len(ids) for t, ids in row.attributes["components_by_type"].items()
    } == R15_COMPONENTS


@pytest.mark.parametrize(
    ("state", "description", "operation"),
    [
        ("Off", "API power off Rack", "power_off"),
        ("cycle", "API power cycle Rack", "restart"),
        ("ForceOff", "API force power off Rack", "force_power_off"),
        ("forcecycle", "API force power cycle Rack", "force_restart"),
        ("ACPowerCycle", "API AC power cycle Rack", "cold_reset"),
    ],
)
def test_each_power_state_is_its_flow_operation(
    client: TestClient,
    bearer: Bearer,
    storage: Storage,
    state: str,
    description: str,
    operation: str,
) -> None:
    response = power(client, bearer(), FREE_RACK, state)
    (task_id,) = response.json()["taskIds"]
    assert task(client, bearer(), task_id)["description"] == description
    assert stored(storage, task_id).information["operation"] == operation


def test_mixed_case_states_are_refused(client: TestClient, bearer: Bearer) -> None:
    assert_error(
        power(client, bearer(), FREE_RACK, "Forcecycle"),
        400,
        "Failed to validate power control request data",
        {"state": "must be one of [On Off Cycle ForceOff ForceCycle ACPowerCycle]"},
    )


def test_firmware_and_bring_up_descriptions(
    client: TestClient, bearer: Bearer, storage: Storage
) -> None:
    firmware = call(
        client, bearer(), f"rack/{FREE_RACK}/firmware", {"siteId": ACME_SITE, "version": "2.0"}
    )
    (firmware_id,) = firmware.json()["taskIds"]
    made = task(client, bearer(), firmware_id)
    assert made["description"] == "API firmware update Rack"
    # sjc-dc1's default firmware rule is recorded as the task's rule.
    assert made["ruleId"] == RULE
    assert stored(storage, firmware_id).type == "firmware_control"
    bring_up = call(
        client, bearer(), f"rack/{OTHER_FREE_RACK}/bringup", {"siteId": ACME_SITE}, "POST"
    )
    (bring_up_id,) = bring_up.json()["taskIds"]
    assert (
        task(client, bearer(), bring_up_id)["description"] == f"API bring up Rack {OTHER_FREE_RACK}"
    )
    named = call(
        client,
        bearer(),
        "rack/bringup",
        {"siteId": ACME_SITE, "filter": {"names": ["R-09"]}},
        "POST",
    )
    assert (
        task(client, bearer(), named.json()["taskIds"][0])["description"]
        == "API batch bring up Racks"
    )
    described = call(
        client,
        bearer(),
        "rack/bringup",
        {"siteId": ACME_SITE, "filter": {"names": ["R-02"]}, "description": "Initial bring up"},
        "POST",
    )
    assert (
        task(client, bearer(), described.json()["taskIds"][0])["description"] == "Initial bring up"
    )


def test_a_pinned_rule_is_the_tasks_rule(client: TestClient, bearer: Bearer) -> None:
    response = power(client, bearer(), FREE_RACK, ruleId=COMPUTE_ONLY_RULE)
    assert task(client, bearer(), response.json()["taskIds"][0])["ruleId"] == COMPUTE_ONLY_RULE


def test_an_unknown_rule_is_flows_not_found(client: TestClient, bearer: Bearer) -> None:
    rule = str(uuid.uuid4())
    assert_error(
        power(client, bearer(), FREE_RACK, ruleId=rule),
        404,
        f"requested rule_id {rule}: rpc error: code = NotFound desc = operation rule not found",
    )


def test_a_rule_with_no_step_for_the_targets_is_a_precondition(
    client: TestClient, bearer: Bearer
) -> None:
    # An AC power cycle is for compute trays only: a power shelf has no step in its rule.
    response = call(
        client,
        bearer(),
        "tray/power",
        {
            "siteId": ACME_SITE,
            "state": "ACPowerCycle",
            "filter": {"rackName": "R-15", "type": "PowerShelf"},
        },
    )
    assert_error(
        response,
        412,
        'operation rule "Hardcoded Default AC Power Cycle" has no step applicable to targeted '
        "component types [PowerShelf]",
    )
    pinned = call(
        client,
        bearer(),
        "tray/power",
        {
            "siteId": ACME_SITE,
            "state": "On",
            "ruleId": COMPUTE_ONLY_RULE,
            "filter": {"rackName": "R-15", "type": "NVSwitch"},
        },
    )
    assert_error(
        pinned,
        412,
        f'operation rule "Power on compute only" ({COMPUTE_ONLY_RULE}) has no step applicable '
        "to targeted component types [NVSwitch]",
    )


def test_a_batch_makes_one_task_per_rack(
    client: TestClient, bearer: Bearer, storage: Storage
) -> None:
    response = call(
        client,
        bearer(),
        "rack/power",
        {"siteId": ACME_SITE, "state": "Off", "filter": {"names": ["R-15", "R-02"]}},
    )
    assert response.status_code == 200, response.text
    ids = response.json()["taskIds"]
    assert len(ids) == 2 and len(set(ids)) == 2
    assert {stored(storage, i).rack_id for i in ids} == {
        uuid.UUID("25ae67f1-9bdc-4ecd-8490-bfb84d284d92"),
        uuid.UUID("0395aa3f-6489-4ac2-ab7c-7a675ae3dac7"),
    }


def test_a_batch_without_filter_targets_every_rack_of_the_site(
    client: TestClient, bearer: Bearer
) -> None:
    response = call(client, bearer(), "rack/firmware", {"siteId": ACME_SITE_2})
    assert response.status_code == 200, response.text
    assert len(response.json()["taskIds"]) == 2  # B-03 and B-04


def test_an_unknown_batch_filter_key_is_ignored_and_logged(
    client: TestClient, bearer: Bearer, caplog: pytest.LogCaptureFixture
) -> None:
    # Go's decoder ignores the key: the batch targets every rack of the Site, as production's.
    caplog.set_level(logging.WARNING, logger="nico_api.web.framework")
    wanted = {"rackNames": ["B-03-secret"], "zone": "secret-value"}
    response = call(client, bearer(), "rack/firmware", {"siteId": ACME_SITE_2, "filter": wanted})
    assert response.status_code == 200, response.text
    assert len(response.json()["taskIds"]) == 2  # B-03 and B-04
    (record,) = [r for r in caplog.records if r.message == "batch filter keys ignored"]
    assert record.levelname == "WARNING"
    # Named by key only, never with the body's values.
    assert record.fields == {
        "operation": "firmware-update-racks",
        "unknown_keys": ["rackNames", "zone"],
    }
    line = json.loads(JsonFormatter().format(record))
    assert line["unknown_keys"] == ["rackNames", "zone"] and "secret" not in json.dumps(line)


def test_known_filter_keys_log_no_warning(
    client: TestClient, bearer: Bearer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="nico_api.web.framework")
    # A key in another case is the field Go folds it to.
    for path, wanted in (
        ("rack/power", {"Names": ["R-15"]}),
        ("tray/power", {"rackname": "R-15", "type": "Compute"}),
    ):
        body = {"siteId": ACME_SITE, "state": "On", "filter": wanted}
        assert call(client, bearer(), path, body).status_code == 200
    # A tray filter's keys are not a rack filter's.
    body = {"siteId": ACME_SITE, "state": "On", "filter": {"rackName": "R-02", "names": ["x"]}}
    assert call(client, bearer(), "tray/power", body).status_code == 200
    assert [r.fields for r in caplog.records] == [
        {"operation": "power-control-trays", "unknown_keys": ["names"]}
    ]


def test_trays_of_one_rack_share_one_task(
    client: TestClient, bearer: Bearer, storage: Storage
) -> None:
    response = call(
        client,
        bearer(),
        "tray/power",
        {"siteId": ACME_SITE, "state": "Cycle", "filter": {"rackName": "R-15", "type": "Compute"}},
    )
    (task_id,) = response.json()["taskIds"]
    assert task(client, bearer(), task_id)["description"] == "API power cycle Tray"
    assert {
        t: len(ids) for t, ids in stored(storage, task_id).attributes["components_by_type"].items()
    } == {"Compute": 4}
    with storage.connection() as c:
        assert (
            len(
                c.execute(
                    select(TaskComponent).where(TaskComponent.task_id == uuid.UUID(task_id))
                ).all()
            )
            == 4
        )


def test_a_slot_that_holds_no_tray_makes_no_task(client: TestClient, bearer: Bearer) -> None:
    response = call(
        client,
        bearer(),
        "tray/firmware",
        {"siteId": ACME_SITE, "version": "1", "filter": {"rackName": "R-15", "slotId": 99}},
    )
    assert response.status_code == 200 and response.json() == {"taskIds": []}


@pytest.mark.parametrize("tray", [TRAY, TRAY_MAC, TRAY_MAC.upper()])
def test_a_tray_task_is_listed_for_the_tray(client: TestClient, bearer: Bearer, tray: str) -> None:
    # R-14 is busy: the tray's task waits in its queue, and is listed already.
    response = call(
        client, bearer(), f"tray/{tray}/firmware", {"siteId": ACME_SITE, "version": "3"}
    )
    assert response.status_code == 200, response.text
    (task_id,) = response.json()["taskIds"]
    listed = client.get(
        f"/v2/org/{ACME}/nico/tray/{TRAY}/task", params={"siteId": ACME_SITE}, headers=bearer()
    )
    assert task_id in [t["id"] for t in listed.json()]


# Rack queues.


def test_a_busy_rack_queues_the_task(client: TestClient, bearer: Bearer, storage: Storage) -> None:
    (first,) = power(client, bearer(), FREE_RACK).json()["taskIds"]
    (second,) = power(client, bearer(), FREE_RACK, "Off").json()["taskIds"]
    queued = task(client, bearer(), second)
    assert (queued["status"], queued["message"]) == (
        "Pending",
        "Queued: waiting for rack to become available",
    )
    row = stored(storage, second)
    assert row.status == "waiting" and row.queue_expires_at is not None
    assert 3599 <= (row.queue_expires_at - row.created_at).total_seconds() <= 3600
    assert stored(storage, first).status == "pending"


def test_a_full_queue_refuses_the_sixth_task(client: TestClient, bearer: Bearer) -> None:
    power(client, bearer(), FREE_RACK)
    for _ in range(5):
        assert power(client, bearer(), FREE_RACK, "Off").status_code == 200
    # Production logs the full queue and answers that it made no task.
    assert_error(power(client, bearer(), FREE_RACK, "Off"), 500, "failed to create any tasks")


def test_a_batch_leaves_out_a_rack_that_refuses(client: TestClient, bearer: Bearer) -> None:
    power(client, bearer(), FREE_RACK)
    for _ in range(5):
        power(client, bearer(), FREE_RACK, "Off")
    response = call(
        client,
        bearer(),
        "rack/power",
        {"siteId": ACME_SITE, "state": "On", "filter": {"names": ["R-15", "R-02"]}},
    )
    assert response.status_code == 200 and len(response.json()["taskIds"]) == 1


def test_trays_that_do_not_overlap_run_side_by_side(
    client: TestClient, bearer: Bearer, storage: Storage
) -> None:
    # Compute power and switch power on one rack do not conflict; a rack power on does.
    compute = call(
        client,
        bearer(),
        "tray/power",
        {"siteId": ACME_SITE, "state": "On", "filter": {"rackName": "R-15", "type": "Compute"}},
    )
    switches = call(
        client,
        bearer(),
        "tray/power",
        {"siteId": ACME_SITE, "state": "On", "filter": {"rackName": "R-15", "type": "NVSwitch"}},
    )
    rack = power(client, bearer(), FREE_RACK)
    statuses = [stored(storage, r.json()["taskIds"][0]).status for r in (compute, switches, rack)]
    assert statuses == ["pending", "pending", "waiting"]


@pytest.fixture
def rejecting_app(settings: Settings, app: NICoApp) -> NICoApp:
    """An app whose Flow refuses a task on a busy rack, as production's REST API asks it to."""
    app = create_app(settings.model_copy(update={"flow_conflicts": "reject"}))
    yield app
    app.runtime.close()


def test_without_queueing_a_busy_rack_refuses(rejecting_app: NICoApp, bearer: Bearer) -> None:
    with rejecting_app.test_client() as client:
        assert power(client, bearer(), FREE_RACK).status_code == 200
        assert_error(power(client, bearer(), FREE_RACK, "Off"), 500, "failed to create any tasks")


# Identical requests in flight.


def test_identical_requests_in_flight_get_the_same_tasks(
    threaded_client: TestClient, bearer: Bearer, storage: Storage
) -> None:
    with orders_received() as received:
        answers = in_flight_together(
            lambda: power(threaded_client, bearer(), FREE_RACK),
            lambda: power(threaded_client, bearer(), FREE_RACK),
            engine=storage.engine,
            racks=[FREE_RACK],
            received=received,
        )
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json() == answers[1].json()
    # Once answered, the same request is a new one: it queues behind the first.
    (later,) = power(threaded_client, bearer(), FREE_RACK).json()["taskIds"]
    assert later not in answers[0].json()["taskIds"]


def test_different_requests_in_flight_are_not_joined(
    threaded_client: TestClient, bearer: Bearer, storage: Storage
) -> None:
    with orders_received() as received:
        on, off = in_flight_together(
            lambda: power(threaded_client, bearer(), FREE_RACK),
            lambda: power(threaded_client, bearer(), FREE_RACK, "Off"),
            engine=storage.engine,
            racks=[FREE_RACK],
            received=received,
        )
    assert on.status_code == off.status_code == 200
    assert on.json() != off.json()


def test_the_same_request_at_two_sites_is_two_requests(
    threaded_client: TestClient, bearer: Bearer, storage: Storage
) -> None:
    # A batch without a filter has the same workflow id at every Site: each Site has its own.
    with orders_received() as received:
        here, there = in_flight_together(
            lambda: call(threaded_client, bearer(), "rack/firmware", {"siteId": ACME_SITE}),
            lambda: call(threaded_client, bearer(), "rack/firmware", {"siteId": ACME_SITE_2}),
            engine=storage.engine,
            racks=[FREE_RACK, SITE_2_RACK],
            received=received,
        )
    assert len(here.json()["taskIds"]) == 4 and len(there.json()["taskIds"]) == 2
    for site, answer in ((ACME_SITE, here), (ACME_SITE_2, there)):
        for task_id in answer.json()["taskIds"]:
            got = threaded_client.get(
                f"/v2/org/{ACME}/nico/task/{task_id}", params={"siteId": site}, headers=bearer()
            )
            assert got.status_code == 200


# The checks, in production's order.


@pytest.mark.parametrize("operation", sorted(RACK_OPS))
def test_single_rack_checks_the_caller_before_the_body(
    client: TestClient, bearer: Bearer, operation: str
) -> None:
    method, _, _ = RACK_OPS[operation]
    path = f"rack/{FREE_RACK}/{operation}"
    assert_error(
        call(client, bearer(ACME, "TENANT_ADMIN"), path, "{", method),
        403,
        "User does not have Provider Admin role with org",
    )
    assert_error(
        call(client, bearer(GLOBEX), path, {}, method),
        403,
        f"Failed to validate membership for org: {ACME}",
    )
    assert_error(
        call(client, bearer("initech"), path, {}, method, org="initech"),
        400,
        "Failed to retrieve Infrastructure Provider for org",
    )


@pytest.mark.parametrize("operation", sorted(RACK_OPS))
def test_batch_checks_the_body_before_the_caller(
    client: TestClient, bearer: Bearer, operation: str
) -> None:
    method, _, _ = RACK_OPS[operation]
    path = f"rack/{operation}"
    response = client.request(
        method,
        f"/v2/org/{ACME}/nico/{path}",
        content=b"{not json",
        headers={**bearer(ACME, "TENANT_ADMIN"), "content-type": "application/json"},
    )
    assert_error(response, 400, "Failed to parse request data")
    # A readable body that fails validation is answered before the role too.
    missing_site = call(client, bearer(ACME, "TENANT_ADMIN"), path, {"state": "On"}, method)
    assert missing_site.status_code == 400
    assert missing_site.json()["message"] == "Failed to validate request data"


@pytest.mark.parametrize(
    ("path", "body", "data"),
    [
        (f"rack/{FREE_RACK}/power", {"state": "On"}, {"siteId": "siteId is required"}),
        (f"rack/{FREE_RACK}/power", {"siteId": ACME_SITE}, {"state": "a value is required"}),
        (
            f"rack/{FREE_RACK}/power",
            {"state": "up", "ruleId": "NOT-A-UUID"},
            {
                "siteId": "siteId is required",
                "state": "must be one of [On Off Cycle ForceOff ForceCycle ACPowerCycle]",
                "ruleId": "must be a valid UUID",
            },
        ),
        (f"tray/{TRAY}/power", {"siteId": "", "state": "On"}, {"siteId": "siteId is required"}),
        ("rack/power", {"state": "On"}, {}),
        ("tray/power", {"state": "On"}, {}),
        ("rack/power", {"siteId": ACME_SITE, "state": ""}, {"state": "a value is required"}),
        (
            "tray/power",
            {"siteId": ACME_SITE, "state": "On", "filter": {"rackId": ""}},
            {"rackId": "cannot be blank"},
        ),
        (
            "tray/power",
            {"siteId": ACME_SITE, "state": "On", "filter": {"ids": ["a", ""]}},
            {"ids": {"1": "cannot be blank"}},
        ),
        (
            "tray/power",
            {"siteId": ACME_SITE, "state": "On", "filter": {"type": "GPU"}},
            {"type": "must be one of Compute, NVSwitch, PowerShelf"},
        ),
        (
            "tray/power",
            {"siteId": ACME_SITE, "state": "On", "filter": {"rackId": "a", "rackName": "b"}},
            {"rackId": "rackId and rackName are mutually exclusive"},
        ),
        (
            "tray/firmware",
            {"siteId": ACME_SITE, "filter": {"rackName": "b", "ids": ["x"]}},
            {"rackId": "rackId/rackName cannot be combined with ids"},
        ),
        (
            "tray/firmware",
            {"siteId": ACME_SITE, "filter": {"slotId": 1}},
            {"slotId": "rackId or rackName is required when slotId is set"},
        ),
        (f"rack/{FREE_RACK}/firmware", {"siteId": ACME_SITE, "targets": ["bmc"]}, {}),
        (f"tray/{TRAY}/firmware", {"siteId": ACME_SITE, "version": "1", "targets": [""]}, {}),
        (
            f"rack/{FREE_RACK}/firmware",
            {"siteId": ACME_SITE, "authenticationData": {}},
            {"authenticationData": "must set exactly one of shared or perComponent"},
        ),
        (
            "rack/firmware",
            {"ruleId": "x"},
            {"siteId": "siteId is required", "ruleId": "must be a valid UUID"},
        ),
        (f"rack/{FREE_RACK}/bringup", {}, {"siteId": "siteId is required"}),
    ],
)
def test_validation_messages_name_the_failing_fields(
    client: TestClient, bearer: Bearer, path: str, body: dict, data: dict
) -> None:
    method = "POST" if path.endswith("bringup") else "PATCH"
    single = path.split("/")[1] not in ("power", "firmware", "bringup")
    kind = path.rsplit("/", 1)[1]
    message = RACK_OPS[kind][2] if single else "Failed to validate request data"
    assert_error(call(client, bearer(), path, body, method), 400, message, data)


@pytest.mark.parametrize(
    ("authentication", "message"),
    [
        ({"shared": "s", "token": "t"}, 'authenticationData contains unknown field "token"'),
        ({"b": 1, "a": 2}, 'authenticationData contains unknown fields: "a", "b"'),
        (
            {"perComponent": {"gpu": "x"}},
            'authenticationData.perComponent contains unknown field "gpu"',
        ),
    ],
)
def test_unknown_authentication_fields_are_named(
    client: TestClient, bearer: Bearer, authentication: dict, message: str
) -> None:
    body = {"siteId": ACME_SITE, "authenticationData": authentication}
    assert_error(call(client, bearer(), f"rack/{FREE_RACK}/firmware", body), 400, message)


def test_a_value_of_the_wrong_type_cannot_be_read(client: TestClient, bearer: Bearer) -> None:
    assert_error(power(client, bearer(), FREE_RACK, 1), 400, "Failed to parse request data")
    batch = call(
        client,
        bearer(),
        "rack/power",
        {"siteId": ACME_SITE, "state": "On", "filter": {"names": "R-15"}},
    )
    assert_error(batch, 400, "Failed to parse request data")


@pytest.mark.parametrize("entity", ["rack", "tray"])
def test_the_site_checks(client: TestClient, bearer: Bearer, entity: str) -> None:
    target = FREE_RACK if entity == "rack" else TRAY
    path = f"{entity}/{target}/power"

    def site(value: str):
        return call(client, bearer(), path, {"siteId": value, "state": "On"})

    if entity == "rack":
        assert_error(site("nope"), 400, "Failed to validate Site specified in request: invalid ID")
    else:
        # Production's tray handlers answer a Site id that is not a UUID as a database error.
        assert_error(site("nope"), 500, "Failed to retrieve Site due to DB error")
    assert_error(site(str(uuid.uuid4())), 400, "Site specified in request does not exist")
    assert_error(
        site(GLOBEX_SITE), 403, "Site specified in request doesn't belong to current org's Provider"
    )


def test_whether_the_site_runs_flow_is_not_checked(client: TestClient, bearer: Bearer) -> None:
    # The lab Site has NICo Flow disabled; creating a task there is still Flow's to answer.
    response = call(
        client, bearer(), "rack/L-01-unknown/power", {"siteId": ACME_LAB_SITE, "state": "On"}
    )
    assert response.status_code == 404, response.text


def test_unknown_racks_and_trays_are_flows_not_found(client: TestClient, bearer: Bearer) -> None:
    assert_error(
        power(client, bearer(), "R-404"),
        404,
        "failed to resolve rack target: failed to get rack by identifier "
        "{ID:00000000-0000-0000-0000-000000000000 Name: ExternalID:R-404}: "
        "rpc error: code = NotFound desc = rack with external id R-404 is not found",
    )
    assert_error(
        call(client, bearer(), "tray/T-404/power", {"siteId": ACME_SITE, "state": "On"}),
        404,
        "failed to get component target external_id=T-404: rpc error: code = NotFound "
        'desc = component identifier "T-404" not found',
    )
    assert_error(
        call(
            client,
            bearer(),
            "rack/power",
            {"siteId": ACME_SITE, "state": "On", "filter": {"names": ["Z-9"]}},
        ),
        404,
        "failed to resolve rack target: failed to get rack by identifier "
        "{ID:00000000-0000-0000-0000-000000000000 Name:Z-9 ExternalID:}: "
        "rpc error: code = NotFound desc = rack Z-9 is not found",
    )


def test_query_parameters_are_ignored(client: TestClient, bearer: Bearer) -> None:
    response = client.patch(
        f"/v2/org/{ACME}/nico/rack/{FREE_RACK}/power",
        params={"anything": "1"},
        json={"siteId": ACME_SITE, "state": "On"},
        headers=bearer(),
    )
    assert response.status_code == 200, response.text


def test_no_token_is_401_before_anything(client: TestClient) -> None:
    response = client.patch(f"/v2/org/{ACME}/nico/rack/power", content=b"{")
    assert_error(response, 401, "Request is missing authorization header")


def test_a_cancelled_waiting_task_is_not_promoted(
    client: TestClient, bearer: Bearer, storage: Storage, settings: Settings
) -> None:
    (first,) = power(client, bearer(), FREE_RACK).json()["taskIds"]
    (second,) = power(client, bearer(), FREE_RACK, "Off").json()["taskIds"]
    cancelled = client.post(
        f"/v2/org/{ACME}/nico/task/{second}/cancel", json={"siteId": ACME_SITE}, headers=bearer()
    )
    assert cancelled.json()["status"] == "Terminated"
    row = stored(storage, second)
    assert row.queue_expires_at is None and row.due_at is None
    flow = Executor(storage, settings.model_copy(update={"flow_step_seconds": 0}))
    for _ in range(12):
        flow.sweep()
        flow.run_due()
    assert stored(storage, first).status == "completed"
    assert stored(storage, second).status == "terminated"  # never promoted, never run


def test_the_busy_demo_rack_queues(client: TestClient, bearer: Bearer, storage: Storage) -> None:
    # R-14 runs the demo's firmware update (a fixture task that never ends).
    (queued,) = power(client, bearer(), RACK).json()["taskIds"]
    assert stored(storage, queued).status == "waiting"
    assert TRAY_RECORD in {
        c for ids in stored(storage, queued).attributes["components_by_type"].values() for c in ids
    }


def test_a_tray_named_twice_is_targeted_once(
    client: TestClient, bearer: Bearer, storage: Storage
) -> None:
    # R-15's first compute tray, by its MAC address twice.
    body = {"siteId": ACME_SITE, "state": "On", "filter": {"ids": ["02:00:5e:01:02:14"] * 2}}
    (task_id,) = call(client, bearer(), "tray/power", body).json()["taskIds"]
    assert stored(storage, task_id).attributes["components_by_type"] == {
        "Compute": ["a760755f-b8d5-45fd-92b0-917df3c42127"]
    }


def test_an_empty_rack_name_is_refused_by_flow(client: TestClient, bearer: Bearer) -> None:
    body = {"siteId": ACME_SITE, "state": "On", "filter": {"names": [""]}}
    assert_error(
        call(client, bearer(), "rack/power", body),
        500,
        "convert rack target: rack target name must not be empty",
    )


def test_a_slot_beyond_int32_cannot_be_read(client: TestClient, bearer: Bearer) -> None:
    body = {"siteId": ACME_SITE, "version": "1", "filter": {"rackName": "R-15", "slotId": 2**31}}
    assert_error(call(client, bearer(), "tray/firmware", body), 400, "Failed to parse request data")


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (
            "rack/a%00b/power",
            {"state": "On"},
            "rack with external id a\x00b is not found",
        ),
        (
            "tray/power",
            {"state": "On", "filter": {"ids": ["a\x00b"]}},
            'component identifier "a\x00b" not found',
        ),
        (
            "rack/power",
            {"state": "On", "filter": {"names": ["a\x00b"]}},
            "rack a\x00b is not found",
        ),
    ],
)
def test_text_no_database_stores_names_nothing(
    client: TestClient, bearer: Bearer, path: str, body: dict, message: str
) -> None:
    response = call(client, bearer(), path, {"siteId": ACME_SITE, **body})
    assert response.status_code == 404, response.text
    assert response.json()["message"].endswith(message)


def test_a_description_no_database_stores_makes_no_task(client: TestClient, bearer: Bearer) -> None:
    # Flow fails to store the task, skips the rack, and made none.
    body = {"siteId": ACME_SITE, "description": "a\x00b"}
    response = call(client, bearer(), f"rack/{FREE_RACK}/bringup", body, "POST")
    assert_error(response, 500, "failed to create any tasks")


def test_names_repeated_many_times_are_resolved_once(client: TestClient, bearer: Bearer) -> None:
    body = {"siteId": ACME_SITE, "state": "On", "filter": {"names": ["R-15", "R-02"] * 20_000}}
    response = call(client, bearer(), "rack/power", body)
    assert response.status_code == 200, response.text
    assert len(response.json()["taskIds"]) == 2


def test_a_tray_of_another_type_is_not_found(client: TestClient, bearer: Bearer) -> None:
    # The resolver looks among the trays of the requested type only.
    body = {"siteId": ACME_SITE, "state": "On", "filter": {"ids": [TRAY], "type": "NVSwitch"}}
    assert_error(
        call(client, bearer(), "tray/power", body),
        404,
        f"failed to get component target external_id={TRAY}: rpc error: code = NotFound "
        f'desc = component identifier "{TRAY}" not found',
    )


def test_an_empty_slot_is_answered_before_the_rule_is_looked_up(
    client: TestClient, bearer: Bearer
) -> None:
    body = {
        "siteId": ACME_SITE,
        "version": "1",
        "ruleId": str(uuid.uuid4()),
        "filter": {"rackName": "R-15", "slotId": 99},
    }
    response = call(client, bearer(), "tray/firmware", body)
    assert response.status_code == 200 and response.json() == {"taskIds": []}


@pytest.mark.parametrize("operation", sorted(TRAY_OPS))
def test_single_tray_checks_the_caller_before_the_body(
    client: TestClient, bearer: Bearer, operation: str
) -> None:
    path = f"tray/{TRAY}/{operation}"
    assert_error(
        call(client, bearer(ACME, "TENANT_ADMIN"), path, "{"),
        403,
        "User does not have Provider Admin role with org",
    )
    assert_error(
        call(client, bearer("initech"), path, {}, org="initech"),
        400,
        "Failed to retrieve Infrastructure Provider for org",
    )


@pytest.mark.parametrize("operation", sorted(TRAY_OPS))
def test_tray_batch_checks_the_body_before_the_caller(
    client: TestClient, bearer: Bearer, operation: str
) -> None:
    response = client.patch(
        f"/v2/org/{ACME}/nico/tray/{operation}",
        content=b"[",
        headers={**bearer(ACME, "TENANT_ADMIN"), "content-type": "application/json"},
    )
    assert_error(response, 400, "Failed to parse request data")


@pytest.mark.parametrize(
    ("path", "method", "invalid"),
    [
        ("rack/power", "PATCH", (400, "Failed to validate Site specified in request: invalid ID")),
        (
            "rack/firmware",
            "PATCH",
            (400, "Failed to validate Site specified in request: invalid ID"),
        ),
        ("rack/bringup", "POST", (400, "Failed to validate Site specified in request: invalid ID")),
        ("tray/power", "PATCH", (500, "Failed to retrieve Site due to DB error")),
        ("tray/firmware", "PATCH", (500, "Failed to retrieve Site due to DB error")),
        (f"tray/{TRAY}/firmware", "PATCH", (500, "Failed to retrieve Site due to DB error")),
    ],
)
def test_the_site_checks_of_the_batches(
    client: TestClient, bearer: Bearer, path: str, method: str, invalid: tuple[int, str]
) -> None:
    def site(value: str):
        return call(client, bearer(), path, {"siteId": value, "state": "On"}, method)

    assert_error(site("nope"), *invalid)
    assert_error(site(str(uuid.uuid4())), 400, "Site specified in request does not exist")
    assert_error(
        site(GLOBEX_SITE), 403, "Site specified in request doesn't belong to current org's Provider"
    )


def test_a_task_that_runs_at_once_has_no_queue_time(
    client: TestClient, bearer: Bearer, storage: Storage
) -> None:
    (task_id,) = power(client, bearer(), FREE_RACK).json()["taskIds"]
    row = stored(storage, task_id)
    assert (row.status, row.queue_expires_at, row.due_at is not None) == ("pending", None, True)


# How a create request's body is read (the `body` rows), for every create operation.

CREATE_OPS = {
    "power-control-rack": ("PATCH", f"rack/{FREE_RACK}/power", {"State": "On"}),
    "power-control-racks": ("PATCH", "rack/power", {"STATE": "On"}),
    "firmware-update-rack": ("PATCH", f"rack/{FREE_RACK}/firmware", {"Version": "1"}),
    "firmware-update-racks": ("PATCH", "rack/firmware", {"VERSION": "1"}),
    "bringup-rack": ("POST", f"rack/{FREE_RACK}/bringup", {}),
    "bringup-racks": ("POST", "rack/bringup", {}),
    "power-control-tray": ("PATCH", f"tray/{TRAY}/power", {"state": "On"}),
    "power-control-trays": ("PATCH", "tray/power", {"sTaTe": "On"}),
    "firmware-update-tray": ("PATCH", f"tray/{TRAY}/firmware", {"Version": "1"}),
    "firmware-update-trays": ("PATCH", "tray/firmware", {}),
}
FIRMWARE_OPS = [op for op in CREATE_OPS if op.startswith("firmware")]


def send(client: TestClient, headers: dict[str, str], operation: str, content: bytes):
    method, path, _ = CREATE_OPS[operation]
    return client.request(
        method,
        f"/v2/org/{ACME}/nico/{path}",
        content=content,
        headers={**headers, "Content-Type": "application/json"},
    )


@pytest.mark.parametrize("operation", sorted(CREATE_OPS))
def test_body_1_keys_in_any_case(client: TestClient, bearer: Bearer, operation: str) -> None:
    # The keys bind as Go binds them: the request goes on to the Site check.
    body = {"SiteId": str(uuid.UUID(int=7)), **CREATE_OPS[operation][2]}
    response = send(client, bearer(), operation, json_bytes(body))
    assert_error(response, 400, "Site specified in request does not exist")


def test_body_1_keys_in_any_case_make_the_task(client: TestClient, bearer: Bearer) -> None:
    # The long s and the Kelvin sign fold to ASCII letters in Go; the last key read wins.
    body = {"siteId": "nope", "\u017fITEID": ACME_SITE, "\u212aey": 1, "STATE": "Off"}
    response = send(client, bearer(), "power-control-rack", json_bytes(body))
    assert response.status_code == 200, response.text
    (task_id,) = response.json()["taskIds"]
    assert task(client, bearer(), task_id)["description"] == "API power off Rack"


def test_body_1_nested_keys_in_any_case(client: TestClient, bearer: Bearer) -> None:
    body = {"siteId": ACME_SITE, "state": "On", "Filter": {"NAMES": ["Z-9"]}}
    response = send(client, bearer(), "power-control-racks", json_bytes(body))
    assert response.status_code == 404 and "rack Z-9 is not found" in response.json()["message"]


def test_body_1_authentication_data_is_read_by_exact_names(
    client: TestClient, bearer: Bearer
) -> None:
    # Its own reader matches names exactly: another case is an unknown field.
    body = {"siteId": ACME_SITE, "AuthenticationData": {"Shared": "s"}}
    response = send(client, bearer(), "firmware-update-rack", json_bytes(body))
    assert_error(response, 400, 'authenticationData contains unknown field "Shared"')


@pytest.mark.parametrize("operation", sorted(CREATE_OPS))
@pytest.mark.parametrize("after", [b" {not json", b"}\xff\xfe", b'{"siteId": 1}', b"\n\n[]"])
def test_body_2_bytes_after_the_value_are_not_read(
    client: TestClient, bearer: Bearer, operation: str, after: bytes
) -> None:
    body = {"siteId": str(uuid.UUID(int=7)), **CREATE_OPS[operation][2]}
    response = send(client, bearer(), operation, b"  " + json_bytes(body) + after)
    assert_error(response, 400, "Site specified in request does not exist")


@pytest.mark.parametrize("operation", FIRMWARE_OPS)
def test_body_4_unknown_authentication_fields_stop_the_reading(
    client: TestClient, bearer: Bearer, operation: str
) -> None:
    # The earlier value of the wrong type is not what is answered.
    content = b'{"siteId":5,"authenticationData":{"zz":1,"aa":1}}'
    response = send(client, bearer(), operation, content)
    assert_error(response, 400, 'authenticationData contains unknown fields: "aa", "zz"')


def test_body_4_the_outer_object_is_read_first(client: TestClient, bearer: Bearer) -> None:
    content = b'{"authenticationData":{"perComponent":{"gpu":1},"shared":5,"x":1},"siteId":5}'
    response = send(client, bearer(), "firmware-update-trays", content)
    assert_error(response, 400, 'authenticationData contains unknown field "x"')


def test_body_5_field_errors_in_sorted_order(client: TestClient, bearer: Bearer) -> None:
    content = b'{"siteId": "", "state": "Up", "ruleId": "nope"}'
    response = send(client, bearer(), "power-control-rack", content)
    assert response.status_code == 400
    assert response.text.startswith(
        '{"source":"nico","message":"Failed to validate power control request data",'
        '"data":{"ruleId":"must be a valid UUID","siteId":"siteId is required",'
        '"state":"must be one of [On Off Cycle ForceOff ForceCycle ACPowerCycle]"}}'
    )


def test_body_5_nested_field_errors_in_sorted_order(client: TestClient, bearer: Bearer) -> None:
    ids = [""] * 11
    body = {"siteId": ACME_SITE, "state": "On", "filter": {"ids": ids, "rackId": ""}}
    response = send(client, bearer(), "power-control-trays", json_bytes(body))
    assert response.status_code == 400
    data = response.json()["data"]
    assert list(data) == ["ids", "rackId"]
    assert list(data["ids"]) == sorted(str(i) for i in range(11))  # "0", "1", "10", "2", ...


def json_bytes(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def send_typed(
    client: TestClient, headers: dict[str, str], path: str, content_type: str, body: bytes
):
    return client.patch(
        f"/v2/org/{ACME}/nico/{path}",
        content=body,
        headers={**headers, "Content-Type": content_type},
    )


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "application/x-www-form-urlencoded; x=1"]
)
def test_body_3_a_form_binds_nothing_then_is_validated(
    client: TestClient, bearer: Bearer, content_type: str
) -> None:
    body = f"siteId={ACME_SITE}&state=On".encode()
    response = send_typed(client, bearer(), f"rack/{FREE_RACK}/power", content_type, body)
    assert response.status_code == 400
    assert response.json() == {
        "source": "nico",
        "message": "Failed to validate power control request data",
        "data": {"siteId": "siteId is required", "state": "a value is required"},
    }


@pytest.mark.parametrize("body", [b"siteId=a;state=On", b"siteId=%zz"])
def test_body_3_a_form_go_cannot_read_fails_the_bind(
    client: TestClient, bearer: Bearer, body: bytes
) -> None:
    content_type = "application/x-www-form-urlencoded"
    response = send_typed(client, bearer(), f"rack/{FREE_RACK}/power", content_type, body)
    assert_error(response, 400, "Failed to parse request data")


@pytest.mark.parametrize("content_type", ["application/xml", "multipart/form-data", "text/plain"])
def test_body_3_other_types_fail_the_bind(
    client: TestClient, bearer: Bearer, content_type: str
) -> None:
    body = f"siteId={ACME_SITE}&state=On".encode()
    response = send_typed(client, bearer(), f"rack/{FREE_RACK}/power", content_type, body)
    assert_error(response, 400, "Failed to parse request data")
