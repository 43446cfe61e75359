"""`nico-api conformance` over real HTTP: green against this server, red against a broken one."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from xml.etree import ElementTree

import pytest
from sqlalchemy import MetaData, create_engine, select

from tests.demo import (
    ACME,
    ACME_SITE,
    FAILED_TASK,
    FREE_RACK,
    PENDING_TASK,
    RUNNING_TASK,
    TRAY,
)
from tests.processes import BIN, free_port, run, serving

# Real processes, servers or browsers: run by `make test`, left out by `make test-fast`.
pytestmark = pytest.mark.slow


def conformance(
    env: dict[str, str],
    base_url: str,
    token: str,
    task_ids: list[str],
    examples: int,
    junit: Path,
    *options: str,
) -> subprocess.CompletedProcess[str]:
    """`nico-api conformance` against `base_url` at the demo site, with these tasks."""
    return run(
        env,
        "conformance",
        "--base-url",
        base_url,
        "--token",
        token,
        "--site-id",
        ACME_SITE,
        *[arg for task_id in task_ids for arg in ("--task-id", task_id)],
        "--max-examples",
        str(examples),
        "--junit",
        str(junit),
        *options,
        timeout=300,
    )


def test_conformance_passes_against_this_server(
    server: str, env: dict[str, str], tmp_path: Path
) -> None:
    token = run(env, "token", "--org", ACME, "--role", "PROVIDER_ADMIN").stdout.strip()
    junit = tmp_path / "conformance.xml"
    result = conformance(
        env,
        server,
        token,
        [RUNNING_TASK, FAILED_TASK],
        25,
        junit,
        "--allow-writes",
        "--cancel-task-id",
        PENDING_TASK,
        "--rack-id",
        FREE_RACK,
        "--tray-id",
        TRAY,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "failures:   0" in result.stdout
    assert "PASSED" in result.stdout
    requests_line = next(line for line in result.stdout.splitlines() if "requests:" in line)
    two_hundreds = int(requests_line.split("200: ")[1].split(",")[0].rstrip(")"))
    assert two_hundreds > 0
    assert "GET /v2/org/{org}/nico/task/{id}: 25 requests" in result.stderr  # progress
    suite = ElementTree.parse(junit).getroot()
    assert suite.get("tests") == "21" and suite.get("failures") == "0"


def test_a_default_run_changes_nothing(server: str, env: dict[str, str], tmp_path: Path) -> None:
    # Read-only unless asked: against production it must not cancel tasks or power racks.
    # (The caller's own user record is remembered by any request, as production does.)
    before = stored_rows(env["NICO_DATABASE_URL"])
    token = run(env, "token", "--org", ACME, "--role", "PROVIDER_ADMIN").stdout.strip()
    result = conformance(
        env,
        server,
        token,
        [RUNNING_TASK, PENDING_TASK],
        15,
        tmp_path / "c.xml",
        "--rack-id",
        FREE_RACK,
        "--tray-id",
        TRAY,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipped:    12 operations that change records" in result.stdout
    assert "POST" not in result.stderr and "PATCH" not in result.stderr
    assert stored_rows(env["NICO_DATABASE_URL"]) == before


def stored_rows(url: str) -> dict[str, list[tuple]]:
    """Every row of every table but the callers' user records, in a stable order."""
    engine = create_engine(url)
    try:
        tables = MetaData()
        tables.reflect(engine)
        with engine.connect() as c:
            return {
                name: sorted(map(tuple, c.execute(select(table))), key=repr)
                for name, table in tables.tables.items()
                if name != "user"
            }
    finally:
        engine.dispose()


def test_conformance_fails_against_a_broken_server(tmp_path: Path) -> None:
    port = free_port()
    command = [str(BIN / "uvicorn"), "tests.broken_server:app", "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    with serving(command, env, tmp_path / "broken.log", port) as base_url:
        junit = tmp_path / "conformance.xml"
        result = conformance(env, base_url, "anything", [RUNNING_TASK], 10, junit, "--org", ACME)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED" in result.stdout
    assert "Response violates schema: GET /v2/org/{org}/nico/task/{id}" in result.stdout
    assert "1767225600 is not valid" in result.stdout
    assert "/components/schemas/Task/properties/started" in result.stdout
    assert "Undocumented status code: GET /healthz" in result.stdout
    assert "curl -X GET" in result.stdout
    failed = {
        case.get("name")
        for case in ElementTree.parse(junit).getroot()
        if case.find("failure") is not None
    }
    assert {"GET /v2/org/{org}/nico/task/{id}", "GET /healthz"} <= failed


def test_conformance_says_when_the_server_cannot_be_reached(tmp_path: Path) -> None:
    result = run(
        os.environ,
        "conformance",
        "--base-url",
        f"http://127.0.0.1:{free_port()}",
        "--token",
        "t",
        "--org",
        ACME,
        "--site-id",
        ACME_SITE,
        "--max-examples",
        "2",
    )
    assert result.returncode == 2
    assert "error: cannot reach" in result.stderr
