"""schemathesis: every response the app sends, for generated requests, conforms to openapi.yaml."""

from __future__ import annotations

from collections import Counter

import schemathesis
from connexion import AsyncApp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.generation.modes import GenerationMode
from schemathesis.schemas import APIOperation

from nico_api.config import PROJECT_ROOT
from nico_api.dev_issuer import DevIssuer
from tests.demo import ACME, ACME_SITE, RUNNING_TASK

EXAMPLES_PER_OPERATION = 120


def test_every_response_conforms_to_the_spec(app: AsyncApp, issuer: DevIssuer) -> None:
    config = SchemathesisConfig.from_path(PROJECT_ROOT / "schemathesis.toml")
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    headers = {"Authorization": f"Bearer {issuer.issue(ACME, ['PROVIDER_ADMIN'])}"}
    statuses: Counter[tuple[str, int]] = Counter()

    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} == {
        "/v2/org/{org}/nico/task/{id}",
        "/v2/org/{org}/nico/rack/task/{id}",
        "/v2/org/{org}/nico/user/current",
        "/healthz",
        "/readyz",
    }
    for operation in operations:
        _exercise(operation, headers, statuses)

    for operation in operations:
        assert statuses[(operation.path, 200)] > 0, statuses
        if "/task/" in operation.path:
            assert statuses[(operation.path, 400)] > 0, statuses


def _exercise(
    operation: APIOperation, headers: dict[str, str], statuses: Counter[tuple[str, int]]
) -> None:
    # Generated valid and invalid requests, and requests for a demo task so success is covered.
    requests = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
        operation.as_strategy(
            path_parameters={"org": ACME, "id": RUNNING_TASK}, query={"siteId": ACME_SITE}
        )
        if "{id}" in operation.path
        else operation.as_strategy(path_parameters={"org": ACME})
        if "{org}" in operation.path
        else operation.as_strategy(),
    )

    @given(case=requests)
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def conforms(case: schemathesis.Case) -> None:
        response = case.call(headers=headers)
        statuses[(operation.path, response.status_code)] += 1
        case.validate_response(response, headers=headers)

    conforms()
