"""schemathesis, in process: every response the app sends, for generated requests, conforms to
openapi.yaml (the same run `nico-api conformance` makes over HTTP)."""

from __future__ import annotations

import pytest
from connexion import AsyncApp

from nico_api import conformance
from nico_api.dev_issuer import DevIssuer
from tests.demo import ACME, ACME_SITE, FAILED_TASK, PENDING_TASK, RUNNING_TASK

# Over a thousand generated requests: run by `make test`, left out by `make test-fast`.
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
    "GET /healthz",
    "GET /readyz",
}  # and GET /v2/openapi.yaml, where this run reads the spec from (so it is not a target here)


def test_the_run_covers_every_operation(app: AsyncApp) -> None:
    operations = conformance.load_schema(app=app).get_all_operations()
    assert {result.ok().label for result in operations} == OPERATIONS


# One operation per test, so that parallel workers share the run.
@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_every_response_conforms_to_the_spec(
    app: AsyncApp, issuer: DevIssuer, operation: str
) -> None:
    report = conformance.run(
        conformance.load_schema(app=app),
        headers={"Authorization": f"Bearer {issuer.issue(ACME, ['PROVIDER_ADMIN'])}"},
        known=conformance.KnownValues(
            org=ACME, site_id=ACME_SITE, task_ids=(RUNNING_TASK, PENDING_TASK, FAILED_TASK)
        ),
        max_examples=120,
        only={operation},
    )
    assert report.operations == [operation]
    assert report.failures == {}, report.summary()
    success = 202 if operation.startswith("POST") else 200
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
