"""Running in production: migrations, probes, request ids and the access log."""

from __future__ import annotations

import json
import logging
import pkgutil
import subprocess
import sys

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect
from starlette.testclient import TestClient

import nico_api
from nico_api import logs
from nico_api.config import SPEC_PATH, Settings, spec_document
from nico_api.storage import db
from nico_api.storage.models import Base
from tests.demo import ACME_SITE, RUNNING_TASK, task_path
from tests.fixtures import reset

# Every module but `nico_api.__main__`, which runs the command line when imported, and the
# migrations, which Alembic loads.
MODULES = [
    module.name
    for package in (nico_api,)
    for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")
    if not module.name.endswith("__main__") and ".migrations" not in module.name
]


# In one fresh interpreter, each module imported first: the project's modules are forgotten
# before each import (the libraries' stay loaded, as they take no part in our import order).
IMPORT_EACH_FIRST = """
import importlib, json, sys, traceback
failed = {}
for module in sys.argv[1:]:
    for name in [n for n in sys.modules if n.split(".")[0] == "nico_api"]:
        del sys.modules[name]
    try:
        importlib.import_module(module)
    except Exception:
        failed[module] = traceback.format_exc()
print(json.dumps(failed))
"""


@pytest.mark.slow
def test_every_module_can_be_imported_first() -> None:
    # Whichever module a server, a worker or a tool imports first, there is no import cycle.
    modules = ["nico_api.handlers", *MODULES]
    imported = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH_FIRST, *modules],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(imported.stdout) == {}
    assert {"nico_api.vocabulary", "nico_api.storage.models", "nico_api.wire.schemas"} <= set(
        modules
    )


def _differences(engine: Engine) -> list:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def test_migrations_build_exactly_the_models_schema(engine: Engine) -> None:
    assert _differences(engine) == []
    assert set(inspect(engine).get_table_names()) == {
        "alembic_version",
        "infrastructure_provider",
        "operation_rule",
        "rack",
        "site",
        "task",
        "task_component",
        "task_count",
        "task_count_change",
        "tray",
        "user",
        "workflow_run",
    }


def test_migrations_go_down_and_up_again(engine: Engine) -> None:
    db.upgrade(engine, "head")  # already there: nothing to do
    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    db.upgrade(engine)
    assert _differences(engine) == []


def test_an_empty_database_is_migrated_by_db_upgrade(engine: Engine) -> None:
    reset(engine)
    assert inspect(engine).get_table_names() == []
    db.upgrade(engine)
    assert _differences(engine) == []


@pytest.mark.parametrize(
    "accept",
    [
        "application/yaml",
        "application/json;q=0.5, */*",
        "application/yaml, application/json;q=0.9",
        "APPLICATION/YAML",
        "application/json;q=2, application/yaml;q=0.5",
    ],
)
def test_the_spec_is_served_byte_for_byte_to_a_client_that_prefers_yaml(
    client: TestClient, accept: str
) -> None:
    response = client.get("/v2/openapi.yaml", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/yaml"
    assert response.headers["vary"] == "Accept"
    assert response.content == SPEC_PATH.read_bytes()


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "text/html", "application/*"])
def test_the_spec_is_served_as_json_otherwise(client: TestClient, accept: str | None) -> None:
    # JSON is YAML too: every consumer reads it, and so do mock servers such as Prism.
    response = client.get("/v2/openapi.yaml", headers={"Accept": accept} if accept else {})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["vary"] == "Accept"
    assert response.json() == spec_document()
    assert spec_document(response.content) == response.json()


def test_documentation_page_is_served(client: TestClient) -> None:
    page = client.get("/v2/docs/")
    assert page.status_code == 200
    assert "swagger-ui" in page.text
    assert "/v2/openapi.yaml" in page.text


def test_liveness_needs_no_token(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readiness_checks_the_database(client: TestClient) -> None:
    assert client.get("/readyz").json() == {"status": "ok"}


def test_probes_reject_unknown_parameters(client: TestClient) -> None:
    response = client.get("/healthz", params={"deep": "1"})
    assert response.status_code == 400
    assert response.json()["source"] == "nico"


@pytest.mark.parametrize("path", ["/healthz", "/nothing", "/v2/org/acme-inc/nico/task/x"])
def test_request_id_is_echoed(client: TestClient, path: str) -> None:
    response = client.get(path, headers={"X-Request-ID": "client-42.a"})
    assert response.headers["x-request-id"] == "client-42.a"


@pytest.mark.parametrize("sent", [None, "", "has spaces", "x" * 129, "semi;colon"])
def test_request_id_is_made_when_missing_or_odd(client: TestClient, sent: str | None) -> None:
    headers = {} if sent is None else {"X-Request-ID": sent}
    first = client.get("/healthz", headers=headers).headers["x-request-id"]
    second = client.get("/healthz", headers=headers).headers["x-request-id"]
    assert first != second
    assert len(first) == 32 and first != sent


def test_one_json_access_log_line_per_request(
    client: TestClient, bearer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nico_api.access")
    client.get(
        task_path(RUNNING_TASK),
        params={"siteId": ACME_SITE},
        headers={**bearer(), "X-Request-ID": "trace-1"},
    )
    client.get("/nothing")
    records = [r for r in caplog.records if r.name == "nico_api.access"]
    assert len(records) == 2
    line = json.loads(logs.JsonFormatter().format(records[0]))
    assert line["method"] == "GET"
    assert line["path"] == "/v2/org/{org}/nico/task/{id}"  # the template, not the ids
    assert line["operation"] == "get-task"
    assert line["status"] == 200
    assert line["request_id"] == "trace-1"
    assert 0 < line["duration_ms"] < 10_000
    missing = json.loads(logs.JsonFormatter().format(records[1]))
    assert (missing["path"], missing["status"]) == ("(no route)", 404)


def test_an_in_memory_database_has_no_pool_to_size(tmp_path) -> None:
    engine = db.engine_for(Settings(instance_dir=tmp_path, database_url="sqlite://"))
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT 1").scalar() == 1
