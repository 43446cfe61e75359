"""`nico-api conformance` over real HTTP: green against this server, red against a broken one."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path
from xml.etree import ElementTree

import pytest
from sqlalchemy import MetaData, create_engine, select, text

from nico_api.cli import contract
from nico_api.cli.conformance import KnownValues
from nico_api.config import SPEC_PATH
from tests.demo import (
    ACME,
    ACME_LAB_SITE,
    ACME_SITE,
    FAILED_TASK,
    FREE_RACK,
    FREE_RACK_RECORD,
    GLOBEX,
    PENDING_TASK,
    RACK_RECORD,
    RUNNING_TASK,
    TRAY,
    TRAY_RECORD,
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


def contract_options(env: dict[str, str]) -> list[str]:
    """What `--contract` needs to make every check: a tenant's token, another org, a Site
    without Flow."""
    tenant = run(env, "token", "--org", ACME, "--role", "TENANT_ADMIN").stdout.strip()
    return [
        "--contract",
        "--tenant-token",
        tenant,
        "--other-org",
        GLOBEX,
        "--non-flow-site-id",
        ACME_LAB_SITE,
    ]


@pytest.mark.deep  # a long generated run: `make test-deep`
def test_conformance_passes_against_this_server(
    server: str, env: dict[str, str], tmp_path: Path
) -> None:
    token = run(env, "token", "--org", ACME, "--role", "PROVIDER_ADMIN").stdout.strip()
    junit = tmp_path / "conformance.xml"
    before = stored_rows(env["NICO_DATABASE_URL"])
    task_targets_before = task_targets(env["NICO_DATABASE_URL"])
    result = conformance(
        env,
        server,
        token,
        [RUNNING_TASK, FAILED_TASK],
        25,
        junit,
        *contract_options(env),
        "--rack-name",
        "R-15",
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
    schema, rows = ElementTree.parse(junit).getroot()
    assert schema.get("tests") == "22" and schema.get("failures") == "0"
    # Every row of the contract ran and passed: none lacked an option.
    every = len(contract.checks(contract.Caller("t", KnownValues(org="o", site_id="s"))))
    assert f"checks:     {every} ({every} passed, 0 failed" in result.stdout
    assert rows.get("tests") == str(every) and rows.get("failures") == "0"
    assert "pass: cancel-task-14: the same task again" in result.stdout
    assert "pass: get-task-6 before get-task-8" in result.stdout
    # Each create operation made its task on the records named, and its checks answered in
    # production's order.
    for operation in contract.CREATE_OPERATIONS:
        made = f"pass: {operation.operation_id}-8: the records named for writes"
        assert made in result.stdout
    assert "pass: power-control-racks-1 before power-control-racks-4:" in result.stdout
    assert "pass: firmware-update-tray-2 before firmware-update-tray-4:" in result.stdout
    assert "pass: body-1 (bringup-rack): keys in another case" in result.stdout
    # Writes touched only the records named: the task to cancel, R-15, and R-14's tray.
    made = {
        task: target
        for task, target in task_targets(env["NICO_DATABASE_URL"]).items()
        if task not in task_targets_before
    }
    assert len(made) > 10
    assert {rack for rack, _ in made.values()} == {FREE_RACK_RECORD, RACK_RECORD}
    assert {tray for rack, trays in made.values() if rack == RACK_RECORD for tray in trays} == {
        TRAY_RECORD
    }
    after = stored_rows(env["NICO_DATABASE_URL"])
    kept = set(map(repr, after["task"]))
    changed = [uuid.UUID(str(row[0])) for row in before["task"] if repr(row) not in kept]
    assert changed == [uuid.UUID(PENDING_TASK)]


@pytest.mark.deep  # a long generated run: `make test-deep`
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
        "--cancel-task-id",
        PENDING_TASK,
        *contract_options(env),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipped:    12 operations that change records" in result.stdout
    assert "POST" not in result.stderr and "PATCH" not in result.stderr
    # The contract's cancels name only random ids; the named task needs --allow-writes, as
    # does every request to an operation that creates tasks.
    creates = sum(len(operation.rows) for operation in contract.CREATE_OPERATIONS)
    assert f"not run:    {2 + creates} need --allow-writes" in result.stdout
    assert stored_rows(env["NICO_DATABASE_URL"]) == before


def task_targets(url: str) -> dict[str, tuple[str, set[str]]]:
    """Each stored task's rack and components, by task id."""
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            tasks = {
                str(uuid.UUID(str(task))): (str(uuid.UUID(str(rack))) if rack else "", set())
                for task, rack in c.execute(text("SELECT id, rack_id FROM task"))
            }
            for task, component in c.execute(
                text("SELECT task_id, component_id FROM task_component")
            ):
                tasks[str(uuid.UUID(str(task)))][1].add(str(uuid.UUID(str(component))))
            return tasks
    finally:
        engine.dispose()


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
        for case in ElementTree.parse(junit).getroot()[0]
        if case.find("failure") is not None
    }
    assert {"GET /v2/org/{org}/nico/task/{id}", "GET /healthz"} <= failed


@pytest.mark.deep  # every contract row against two servers, per target: `make test-deep`
@pytest.mark.parametrize("target", contract.TARGETS)
def test_contract_names_a_wrong_message_and_a_wrong_order(
    env: dict[str, str], tmp_path: Path, target: str
) -> None:
    # The real server, with a message reworded, the task id checked before the caller, and
    # production's 500 for a missing task (a known difference when production is the target).
    port = free_port()
    command = [
        str(BIN / "uvicorn"),
        "--factory",
        "tests.misordered_server:app",
        "--port",
        str(port),
    ]
    env = {**env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    run(env, "db", "seed", "--demo")
    token = run(env, "token", "--org", ACME, "--role", "PROVIDER_ADMIN").stdout.strip()
    junit = tmp_path / "contract.xml"
    with serving(command, env, tmp_path / "misordered.log", port) as base_url:
        result = conformance(
            env,
            base_url,
            token,
            [RUNNING_TASK],
            1,
            junit,
            *contract_options(env),
            "--target",
            target,
            "--allow-writes",
        )
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    wrong_message = out.split("fail: get-all-tasks-9: a Site that does not exist\n")[1]
    assert wrong_message.startswith(
        '    expected: 400 "Site specified in request does not exist" data null\n'
        '    got:      400 "Site does not exist"\n'
    )
    wrong_order = out.split(
        "fail: get-task-6 before get-task-8: a task id that is not a UUID, without the role\n"
    )[1]
    assert wrong_order.startswith(
        '    expected: 403 "User does not have Provider Admin role with org" data null\n'
        '    got:      400 "Invalid Task ID specified in URL"\n'
    )
    # The deprecated path of the same operation is not misordered.
    assert "pass: get-task-6 before get-task-8 (get-rack-task)" in out
    # A create operation's body read before the caller's role; the same row of another passes.
    create_order = out.split(
        "fail: power-control-rack-2 before power-control-rack-4: a body that is not JSON, "
        "without the role\n"
    )[1]
    assert create_order.startswith(
        '    expected: 403 "User does not have Provider Admin role with org" data null\n'
        '    got:      400 "Failed to parse request data"\n'
        "    reproduce: curl -X PATCH -H 'Authorization: Bearer $TENANT_TOKEN' "
        "-H 'Content-Type: application/json' -d '{' "
    )
    assert "pass: power-control-tray-2 before power-control-tray-4" in out
    # Without named records no task is made: the batches on racks need their names.
    assert "not run:    3 need --rack-name" in out
    missing = "get-task-16: a task that does not exist at the Site"
    if target == "production":
        assert f"known difference: {missing}" in out
        assert f"difference (docs/differences.md): {contract.NO_TASK_DIFFERENCE}" in out
    else:
        assert f"fail: {missing}" in out
    # Reproducing commands name the tokens, never show them.
    reports = out + junit.read_text(encoding="utf-8")
    assert "Authorization: Token $TOKEN" in reports and token not in reports
    cases = {case.get("name"): case for case in ElementTree.parse(junit).getroot()[1]}
    failure = cases["get-task-6 before get-task-8: a task id that is not a UUID, without the role"]
    assert failure.find("failure") is not None
    assert "got: 400" in failure.find("failure").text
    assert (cases[missing].find("skipped") is not None) == (target == "production")


def test_every_known_difference_is_in_the_differences_page() -> None:
    page = Path(__file__).resolve().parent.parent / "docs" / "differences.md"
    rows = page.read_text(encoding="utf-8").split("# Differences from production")[1]
    wheres = {line.split(" | ")[0].removeprefix("| ") for line in rows.splitlines()}
    named = {
        row.difference.where for op in contract.OPERATIONS for row in op.rows if row.difference
    }
    assert named and named <= wheres


@pytest.mark.deep  # a long generated run: `make test-deep`
def test_a_plain_schemathesis_run_finds_only_business_rules(
    server: str, env: dict[str, str], tmp_path: Path
) -> None:
    # From a folder without this project's settings, as a consumer would run it.
    token = run(env, "token", "--org", ACME, "--role", "PROVIDER_ADMIN").stdout.strip()
    reports = tmp_path / "reports"
    result = subprocess.run(
        [
            str(BIN / "schemathesis"),
            "run",
            str(SPEC_PATH),
            "--url",
            server,
            "-H",
            f"Authorization: Bearer {token}",
            "--max-examples",
            "15",
            "--report",
            "junit",
            "--report-dir",
            str(reports),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    [junit] = reports.iterdir()
    texts = [f.text or "" for f in ElementTree.parse(junit).iter("failure")]
    found = [finding for text in texts for finding in FINDING.findall(text)]
    # Every case that failed says why, and each reason is one of docs/consumers.md's.
    assert all(map(FINDING.search, texts)) and "Tested: 22" in result.stdout, result.stdout
    allowed = business_rules()
    unexplained = [
        (check, status, body)
        for check, status, body in found
        if not any(
            (check, int(status)) == (rule_check, rule_status)
            and rule.fullmatch(json.loads(body)["message"])
            for rule_check, rule_status, rule in allowed
        )
    ]
    assert unexplained == [], result.stdout


# A schemathesis finding: its check, then the response's status and body.
FINDING = re.compile(r"- (ST\d+) [^\n]*\n(?:.*\n)*?\[(\d{3})\] [^\n]*:\n\n    `(.*)`")


def business_rules() -> list[tuple[str, int, re.Pattern[str]]]:
    """docs/consumers.md's list of what a plain schemathesis run reports: check, status,
    message (where "…" stands for any text)."""
    page = Path(__file__).resolve().parent.parent / "docs" / "consumers.md"
    section = page.read_text(encoding="utf-8").split(
        "## Plain schemathesis, with no project configuration"
    )[1]
    rules = []
    for line in section.split("\n\n")[2].splitlines()[2:]:
        check, status, message, _why = line.strip("|").split(" | ")
        pattern = ".*".join(re.escape(part) for part in message.strip().split("…"))
        rules.append((check.strip(), int(status), re.compile(pattern)))
    return rules


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
