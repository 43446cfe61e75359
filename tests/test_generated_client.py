"""A Python client generated from openapi.yaml with openapi-python-client reads a real task
from the server over HTTP, with typed fields, and parses errors into NICoAPIError."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from types import ModuleType
from uuid import UUID

import pytest

from nico_api.config import SPEC_PATH
from tests.demo import ACME, ACME_SITE, PENDING_TASK, RULE, RUNNING_TASK
from tests.fixtures import Bearer
from tests.processes import BIN

# Real processes, servers or browsers: run by `make test`, left out by `make test-fast`.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def nico_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    # Generated once: every test only reads the generated package.
    tmp_path = tmp_path_factory.mktemp("generated")
    package = tmp_path / "nico_client"
    result = subprocess.run(
        [
            str(BIN / "openapi-python-client"),
            "generate",
            "--path",
            str(SPEC_PATH),
            "--output-path",
            str(package),
            "--meta",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Every operation is typed, the document itself included (served as JSON by default).
    output = (result.stdout + result.stderr).splitlines()
    assert [line for line in output if line.startswith("WARNING")] == []
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module("nico_client")
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == "nico_client" or n.startswith("nico_client.")]:
            del sys.modules[name]


# What a client generated from upstream's newest spec (SPEC-N) calls each Task operation: the
# module (tag and operationId) and the parameters that a caller passes.
LIST_PARAMETERS = {"org", "site_id", "active_only", "include_report", "page_number", "page_size"}
PRODUCTION_OPERATIONS = {
    "task.get_task": {"org", "id", "site_id"},
    "task.cancel_task": {"org", "id", "body"},
    "task.get_all_tasks": LIST_PARAMETERS,
    "rack.get_rack_tasks": LIST_PARAMETERS | {"id"},
    "tray.get_tray_tasks": LIST_PARAMETERS | {"id"},
}
# ... and the models it reads and writes.
PRODUCTION_MODELS = [
    "Task",
    "TaskStatus",
    "TaskReportV1",
    "TaskReportV1Stage",
    "TaskReportV1Step",
    "TaskReportV1Status",
    "CancelTaskBody",
    "NICoAPIError",
]


def test_generated_client_has_upstreams_names(nico_client: ModuleType) -> None:
    for operation, upstream_parameters in PRODUCTION_OPERATIONS.items():
        module = importlib.import_module(f"nico_client.api.{operation}")
        parameters = set(inspect.signature(module.sync_detailed).parameters) - {"client"}
        # Every upstream parameter is there under upstream's name; this server adds only the
        # request id header and the orderBy it refuses.
        assert upstream_parameters <= parameters, operation
        assert parameters - upstream_parameters <= {"x_request_id", "order_by"}, operation
    models = importlib.import_module("nico_client.models")
    assert [name for name in PRODUCTION_MODELS if not hasattr(models, name)] == []
    step = models.TaskReportV1Step
    assert {"total_components", "succeeded_components", "failed_components"} <= set(
        inspect.signature(step).parameters
    )
    assert {status.value for status in models.TaskStatus} == {
        "Unknown",
        "Pending",
        "Running",
        "Succeeded",
        "Failed",
        "Terminated",
    }


def test_generated_client_reads_a_task_with_its_report(
    nico_client: ModuleType, demo_server: str, bearer: Bearer
) -> None:
    get_task = importlib.import_module("nico_client.api.task.get_task")
    models = importlib.import_module("nico_client.models")
    token = bearer()["Authorization"].removeprefix("Bearer ")
    client = nico_client.AuthenticatedClient(base_url=demo_server, token=token)

    response = get_task.sync_detailed(
        org=ACME, id=UUID(RUNNING_TASK), client=client, site_id=UUID(ACME_SITE)
    )
    task = response.parsed
    assert isinstance(task, models.Task)
    assert task.id == UUID(RUNNING_TASK)
    assert task.status is models.TaskStatus.RUNNING
    assert task.rule_id == UUID(RULE)
    assert task.started == datetime(2026, 11, 2, 9, 0, 5, tzinfo=UTC)
    assert task.finished is None
    report = task.report
    assert isinstance(report, models.TaskReportV1)
    assert [stage.status for stage in report.stages] == [
        models.TaskReportV1Status.COMPLETED,
        models.TaskReportV1Status.RUNNING,
        models.TaskReportV1Status.PENDING,
    ]
    step = report.stages[1].steps[0]
    assert (step.component_type, step.total_components, step.succeeded_components) == (
        "Compute",
        18,
        7,
    )
    assert step.started_at == datetime(2026, 11, 2, 9, 10, tzinfo=UTC)

    pending = get_task.sync(org=ACME, id=UUID(PENDING_TASK), client=client, site_id=UUID(ACME_SITE))
    assert pending.rule_id is None
    assert pending.started is None
    assert pending.status is models.TaskStatus.PENDING


def test_generated_client_parses_errors(
    nico_client: ModuleType, demo_server: str, bearer: Bearer
) -> None:
    get_task = importlib.import_module("nico_client.api.task.get_task")
    get_rack_task = importlib.import_module("nico_client.api.task.get_rack_task")
    models = importlib.import_module("nico_client.models")
    token = bearer()["Authorization"].removeprefix("Bearer ")
    client = nico_client.AuthenticatedClient(base_url=demo_server, token=token)

    missing = get_rack_task.sync_detailed(
        org=ACME,
        id=UUID("00000000-0000-4000-8000-000000000000"),
        client=client,
        site_id=UUID(ACME_SITE),
    )
    assert missing.status_code == 404
    assert isinstance(missing.parsed, models.NICoAPIError)
    assert missing.parsed.message == "Task not found"
    assert missing.parsed.source is models.NICoAPIErrorSource.NICO
    assert missing.parsed.data is None

    anonymous = get_task.sync_detailed(
        org=ACME,
        id=UUID(RUNNING_TASK),
        client=nico_client.Client(base_url=demo_server),
        site_id=UUID(ACME_SITE),
    )
    assert anonymous.status_code == 401
    assert anonymous.parsed.message == "Request is missing authorization header"


def test_generated_client_reads_the_document(nico_client: ModuleType, demo_server: str) -> None:
    get_openapi = importlib.import_module("nico_client.api.specification.get_openapi")
    models = importlib.import_module("nico_client.models")
    document = get_openapi.sync(client=nico_client.Client(base_url=demo_server))
    assert isinstance(document, models.OpenAPIDocument)
    assert document.openapi == "3.0.3"
    assert "/v2/org/{org}/nico/task/{id}" in document.paths.to_dict()
