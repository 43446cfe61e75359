"""schemathesis, in process: every response the app sends, for generated requests, conforms to
openapi.yaml (the same run `nico-api conformance` makes over HTTP)."""

from __future__ import annotations

from connexion import AsyncApp

from nico_api import conformance
from nico_api.dev_issuer import DevIssuer
from tests.demo import ACME, ACME_SITE, FAILED_TASK, PENDING_TASK, RUNNING_TASK

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


def test_every_response_conforms_to_the_spec(app: AsyncApp, issuer: DevIssuer) -> None:
    report = conformance.run(
        conformance.load_schema(app=app),
        headers={"Authorization": f"Bearer {issuer.issue(ACME, ['PROVIDER_ADMIN'])}"},
        known=conformance.KnownValues(
            org=ACME, site_id=ACME_SITE, task_ids=(RUNNING_TASK, PENDING_TASK, FAILED_TASK)
        ),
        max_examples=120,
    )
    assert set(report.operations) == OPERATIONS
    assert report.failures == {}, report.summary()
    for operation in OPERATIONS:
        success = 202 if operation.startswith("POST") else 200
        assert report.count(success, operation) > 0, report.summary()
    for operation in ("GET /v2/org/{org}/nico/task/{id}", "GET /v2/org/{org}/nico/rack/task/{id}"):
        assert report.count(400, operation) > 0, report.summary()
        assert report.count(403, operation) > 0, report.summary()
