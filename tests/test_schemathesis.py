"""schemathesis, in process: every response the app sends, for generated requests, conforms to
openapi.yaml (the same run `nico-api conformance` makes over HTTP)."""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import pytest
from connexion import AsyncApp

from nico_api.auth.dev_issuer import DevIssuer
from nico_api.cli import conformance
from tests.demo import (
    ACME,
    ACME_SITE,
    FAILED_TASK,
    FREE_RACK,
    PENDING_TASK,
    RACK,
    RUNNING_TASK,
    TRAY,
    TRAY_MAC,
)

# Generated requests against the app: left out by `make test-fast`.
pytestmark = pytest.mark.slow

OPERATIONS = {
    "GET /v2/org/{org}/nico/task/{id}",
    "GET /v2/org/{org}/nico/rack/task/{id}",
    "POST /v2/org/{org}/nico/task/{id}/cancel",
    "POST /v2/org/{org}/nico/rack/task/{id}/cancel",
    "GET /v2/org/{org}/nico/task",
    "GET /v2/org/{org}/nico/rack/{id}/task",
    "GET /v2/org/{org}/nico/tray/{id}/task",
    "GET /v2/org/{org}/nico/user/current",
    "PATCH /v2/org/{org}/nico/rack/power",
    "PATCH /v2/org/{org}/nico/rack/{id}/power",
    "PATCH /v2/org/{org}/nico/rack/firmware",
    "PATCH /v2/org/{org}/nico/rack/{id}/firmware",
    "POST /v2/org/{org}/nico/rack/bringup",
    "POST /v2/org/{org}/nico/rack/{id}/bringup",
    "PATCH /v2/org/{org}/nico/tray/power",
    "PATCH /v2/org/{org}/nico/tray/{id}/power",
    "PATCH /v2/org/{org}/nico/tray/firmware",
    "PATCH /v2/org/{org}/nico/tray/{id}/firmware",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
}  # and GET /v2/openapi.yaml, where this run reads the spec from (so it is not a target here)
CREATING = {op for op in OPERATIONS if op.startswith("PATCH") or op.endswith("bringup")}


def test_the_run_covers_every_operation(app: AsyncApp) -> None:
    operations = conformance.load_schema(app=app).get_all_operations()
    assert {result.ok().label for result in operations} == OPERATIONS


def test_the_operations_that_change_records_run_only_when_writes_are_allowed(
    app: AsyncApp, issuer: DevIssuer
) -> None:
    report = conformance.run(
        conformance.load_schema(app=app),
        headers={"Authorization": f"Bearer {issuer.issue(ACME, ['PROVIDER_ADMIN'])}"},
        known=conformance.KnownValues(org=ACME, site_id=ACME_SITE),
        max_examples=1,
        only=OPERATIONS,
    )
    writing = CREATING | {op for op in OPERATIONS if op.endswith("/cancel")}
    assert set(report.skipped) == writing and len(writing) == 12
    assert set(report.operations) == OPERATIONS - writing
    assert "skipped:    12 operations that change records" in report.summary()


def test_writes_act_only_on_records_named_and_need_them(app: AsyncApp, issuer: DevIssuer) -> None:
    report = conformance.run(
        conformance.load_schema(app=app),
        headers={"Authorization": f"Bearer {issuer.issue(ACME, ['PROVIDER_ADMIN'])}"},
        known=conformance.KnownValues(org=ACME, site_id=ACME_SITE, rack_ids=(FREE_RACK,)),
        max_examples=1,
        only=CREATING,
        allow_writes=True,
    )
    assert report.skipped == {
        "PATCH /v2/org/{org}/nico/rack/power": "no record named to change: --rack-name",
        "PATCH /v2/org/{org}/nico/rack/firmware": "no record named to change: --rack-name",
        "POST /v2/org/{org}/nico/rack/bringup": "no record named to change: --rack-name",
        "PATCH /v2/org/{org}/nico/tray/{id}/power": "no record named to change: --tray-id",
        "PATCH /v2/org/{org}/nico/tray/{id}/firmware": "no record named to change: --tray-id",
    }
    assert "skipped:    3 operations that change records (no record named to change: " in (
        report.summary()
    )
    # The tray batches fall back to the rack named.
    assert "PATCH /v2/org/{org}/nico/tray/power" in report.operations


# One operation per test, so that parallel workers share the run; `make test-deep` runs them.
@pytest.mark.deep
@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_every_response_conforms_to_the_spec(
    app: AsyncApp, issuer: DevIssuer, operation: str
) -> None:
    report = conformance.run(
        conformance.load_schema(app=app),
        headers={"Authorization": f"Bearer {issuer.issue(ACME, ['PROVIDER_ADMIN'])}"},
        known=conformance.KnownValues(
            org=ACME,
            site_id=ACME_SITE,
            task_ids=(RUNNING_TASK, PENDING_TASK, FAILED_TASK),
            cancel_task_ids=(RUNNING_TASK, PENDING_TASK, FAILED_TASK),
            rack_ids=(RACK, FREE_RACK),
            tray_ids=(TRAY, TRAY_MAC),
        ),
        # The operations that create tasks are each exercised again with real processes
        # (tests/test_lifecycle.py) and check by check (tests/test_create_tasks.py).
        max_examples=50 if operation in CREATING else 120,
        only={operation},
        allow_writes=True,
        # This app's records are the test's own: invalid requests and generated ids too.
        confine_writes=False,
    )
    assert report.operations == [operation]
    assert report.failures == {}, report.summary()
    success = 202 if operation.endswith("/cancel") else 200
    assert report.count(success, operation) > 0, report.summary()
    if operation in ("GET /v2/org/{org}/nico/task/{id}", "GET /v2/org/{org}/nico/rack/task/{id}"):
        assert report.count(400, operation) > 0, report.summary()
        assert report.count(403, operation) > 0, report.summary()


@pytest.mark.parametrize(
    ("query", "valid"),
    [
        ({"siteId": ACME_SITE, "activeOnly": "1", "pageSize": "+5"}, True),
        ({"siteId": ACME_SITE, "includeReport": "T", "pageNumber": ""}, True),
        ({"siteId": ACME_SITE, "activeOnly": True}, True),
        ({"siteId": ACME_SITE, "activeOnly": "yes"}, False),
        ({"siteId": ACME_SITE, "pageSize": 101}, False),
        ({"siteId": ACME_SITE, "pageSize": "1.5"}, False),
        ({"siteId": ACME_SITE, "foo": "1"}, False),
    ],
)
def test_a_query_production_reads_as_valid_is_no_negative_case(query: dict, valid: bool) -> None:
    # The booleans and integers Go's binder reads must not count against a NICo server.
    schema = conformance.load_schema()
    operation = next(
        result.ok()
        for result in schema.get_all_operations()
        if result.ok().label == "GET /v2/org/{org}/nico/task"
    )
    assert conformance._valid_as_production_reads_it(operation.Case(query=query)) is valid


@pytest.mark.parametrize(
    ("status", "body", "crashed"),
    [
        (500, {"source": "nico", "message": "Internal server error", "data": None}, True),
        (500, {"source": "nico", "message": "failed to create any tasks", "data": None}, False),
        (404, {"source": "nico", "message": "Internal server error", "data": None}, False),
        (500, None, True),
    ],
)
def test_a_500_without_an_answer_of_the_contract_is_a_failure(
    status: int, body: dict | None, crashed: bool
) -> None:
    # Server errors are expected of the operations that create tasks (schemathesis.toml), but
    # only with Flow's words: the server failing on its own is a failure of the run.
    response = httpx.Response(status, json=body) if body else httpx.Response(status, text="<html>")
    assert conformance._crashed(response) is crashed
    report = conformance.Report(target="test")
    report.record("op", conformance.Crash("op"), status, "curl")
    assert "NICO500 Unexpected server error: op" in report.summary()


def test_an_invalid_cancel_names_no_record_but_the_one_named() -> None:
    # Negative generation may keep a real id (the spec's example is the running demo task) and
    # break only a header or the body, which production may read as valid: such an id is
    # pointed at the task named for cancelling; an id that is no UUID is kept, to be refused.
    aim = conformance.Aim(ids=(PENDING_TASK,))
    real = SimpleNamespace(path_parameters={"org": ACME, "id": RUNNING_TASK}, body={"x": 1})
    assert aim.invalid(real).path_parameters["id"] == PENDING_TASK
    broken = SimpleNamespace(path_parameters={"org": ACME, "id": "not-a-uuid"}, body=None)
    assert aim.invalid(broken).path_parameters["id"] == "not-a-uuid"
