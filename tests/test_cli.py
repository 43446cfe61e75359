"""The nico-api command line, run as a user runs it: real processes, real HTTP on loopback."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest

import nico_api
from nico_api import handlers
from nico_api.auth import authenticator as auth
from nico_api.auth.dev_issuer import DevIssuer
from nico_api.cli import main as cli
from nico_api.config import Settings
from tests.demo import ACME, ACME_SITE, RUNNING_TASK, task_path
from tests.processes import NICO_API, free_port, run, serving


def test_served_over_http_with_a_cli_token(demo_server: str, env: dict[str, str]) -> None:
    token = run(env, "token", "--org", ACME, "--role", "PROVIDER_ADMIN").stdout.strip()
    response = httpx.get(
        demo_server + task_path(RUNNING_TASK),
        params={"siteId": ACME_SITE},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200
    assert response.json()["report"]["stages"][1]["steps"][0]["componentType"] == "Compute"

    anonymous = httpx.get(demo_server + task_path(RUNNING_TASK), params={"siteId": ACME_SITE})
    assert anonymous.status_code == 401
    assert anonymous.json()["message"] == auth.MISSING_HEADER


@pytest.mark.deep  # several server processes: `make test-deep`
@pytest.mark.parametrize("workers", [2])
def test_serve_with_worker_processes_logs_json(
    server: str, env: dict[str, str], tmp_path: Path, workers: int
) -> None:
    token = run(env, "token", "--org", ACME, "--role", "PROVIDER_ADMIN").stdout.strip()
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(20):
        response = httpx.get(
            server + task_path(RUNNING_TASK), params={"siteId": ACME_SITE}, headers=headers
        )
        assert response.status_code == 200
    # Each worker writes its own lines: JSON, one access line per request.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in (tmp_path / "server.log").read_text().splitlines()]
        access = [
            line
            for line in lines
            if line["logger"] == "nico_api.access" and line.get("operation") == "get-task"
        ]
        if len(access) >= 20:
            break
        time.sleep(0.2)
    assert len(access) == 20
    assert {line["path"] for line in access} == {"/v2/org/{org}/nico/task/{id}"}
    assert {line["status"] for line in access} == {200}
    workers_started = {
        line["pid"] for line in lines if "Application startup complete" in line["message"]
    }
    assert len(workers_started) == workers


def test_token_command_issues_a_token_the_server_accepts(cli_env: dict[str, str]) -> None:
    instance = Path(cli_env["NICO_INSTANCE_DIR"])
    key = instance / "dev-issuer-key.pem"
    # No key in the instance folder: refused, naming the folder, and nothing is made.
    refused = run(cli_env, "token", "--org", ACME, "--role", "PROVIDER_ADMIN")
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert f"no development signing key in the instance folder {instance}" in refused.stderr
    assert "--create-key" in refused.stderr
    assert not key.exists()

    made = run(cli_env, "token", "--org", ACME, "--role", "PROVIDER_ADMIN", "--create-key")
    assert made.returncode == 0, made.stderr
    assert "made the development key" in made.stderr and str(key) in made.stderr

    result = run(
        cli_env,
        "token",
        "--org",
        ACME,
        "--role",
        "NICO_PROVIDER_ADMIN",
        "--role",
        "TENANT_ADMIN",
        "--ttl",
        "120",
    )
    assert result.returncode == 0, result.stderr
    settings = Settings.from_env(cli_env)
    issuer = DevIssuer(settings)
    assert result.stderr == f"signed with the development key {issuer.key_id} in {key}\n"
    authenticator = auth.Authenticator(auth.auth_config_for(settings))
    caller = asyncio.run(authenticator.verify(result.stdout.strip()))
    assert caller.roles_by_org == {ACME: frozenset({"NICO_PROVIDER_ADMIN", "TENANT_ADMIN"})}
    assert key.stat().st_mode & 0o077 == 0


def test_a_token_from_another_folder_uses_the_instance_of_its_settings(
    env: dict[str, str], tmp_path: Path
) -> None:
    # The instance folder comes from NICO_INSTANCE_DIR, not the working directory.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [NICO_API, "token", "--org", ACME, "--role", "PROVIDER_ADMIN"],
        env=env,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert env["NICO_INSTANCE_DIR"] in result.stderr
    assert not (elsewhere / "instance").exists()


def test_version_is_the_package_version(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"nico-api {version('nico-task-api')}"


def test_python_dash_m_runs_the_command_line(cli_env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nico_api", "db", "--help"],
        env=cli_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert "usage: nico-api db" in result.stdout
    assert "apply the schema migrations" in result.stdout


def _parsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


def test_every_command_and_option_has_help() -> None:
    undocumented = []
    for prog, parser in _parsers(cli.build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                undocumented += [
                    f"{prog} {choice.dest}" for choice in action._choices_actions if not choice.help
                ]
            elif not action.help:
                undocumented.append(f"{prog} {action.dest}")
    assert undocumented == []


def test_serve_reload_watches_the_code_and_the_spec(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    command = [NICO_API, "serve", "--port", str(port), "--reload"]
    with serving(command, cli_env, tmp_path / "server.log", port) as base_url:
        assert httpx.get(base_url + "/healthz").status_code == 200
    log = (tmp_path / "server.log").read_text()
    watched = next(line for line in log.splitlines() if "Will watch for changes" in line)
    package = Path(nico_api.__file__).parent
    assert str(package) in watched
    # In a checkout the handlers live apart from the package: both are watched.
    assert str(Path(handlers.__file__).resolve().parent) in watched


def test_serve_refuses_reload_with_workers(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "serve", "--reload", "--workers", "2")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: --reload runs one worker: leave out --workers"


def test_conformance_without_its_extra_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As in an install without [conformance]: schemathesis cannot be imported.
    monkeypatch.setitem(sys.modules, "schemathesis", None)
    monkeypatch.delitem(sys.modules, "nico_api.cli.conformance", raising=False)
    monkeypatch.delattr(nico_api.cli, "conformance", raising=False)
    status = cli.main(
        ["conformance", "--base-url", "http://127.0.0.1:9", "--token", "t", "--site-id", "s"]
    )
    assert status == 1
    assert capsys.readouterr().err == (
        "error: nico-api conformance needs schemathesis, which comes with the conformance "
        "extra: pip install 'nico-task-api[conformance]'\n"
    )


def test_db_load_rejects_a_bad_file_with_a_message(env: dict[str, str], tmp_path: Path) -> None:
    assert run(env, "db", "seed", "--demo").returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"tasks:\n  - id: {RUNNING_TASK}\n    site_id: {ACME_SITE}\n    status: nope\n")
    result = run(env, "db", "load", str(bad))
    assert result.returncode == 1
    assert f"tasks[0] (id {RUNNING_TASK}) field 'status'" in result.stderr
    assert "Traceback" not in result.stderr


def test_db_load_names_text_it_cannot_store_without_a_traceback(
    env: dict[str, str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"tasks:\n  - id: {RUNNING_TASK}\n    site_id: {ACME_SITE}\n    status: failed\n"
        '    message: "half a pair: \\ud800"\n'
    )
    result = run(env, "db", "load", str(bad))
    assert result.returncode == 1
    assert f"tasks[0] (id {RUNNING_TASK}) field 'message'" in result.stderr
    assert "Traceback" not in result.stderr


def test_db_load_refuses_a_nest_of_aliases_with_a_message(
    env: dict[str, str], tmp_path: Path
) -> None:
    assert run(env, "db", "seed", "--demo").returncode == 0
    levels = [f"  l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]\n" for n in range(1, 10)]
    bomb = tmp_path / "laughs.yaml"
    bomb.write_text(
        "anchors:\n  l0: &l0 [lol]\n" + "".join(levels) + f"tasks:\n  - id: {RUNNING_TASK}\n"
        f"    site_id: {ACME_SITE}\n    status: failed\n    report: *l9\n"
    )
    started = time.monotonic()
    result = run(env, "db", "load", str(bomb))
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert f"{bomb}: its aliases expand it by more than 100000 values" in result.stderr
    assert "Traceback" not in result.stderr
    # The command's own start-up included: the file is refused before it is expanded.
    assert elapsed < 10, elapsed


def test_db_load_accepts_a_good_file(env: dict[str, str], tmp_path: Path) -> None:
    assert run(env, "db", "seed", "--demo").returncode == 0
    good = tmp_path / "good.yaml"
    good.write_text(
        f"tasks:\n  - id: {RUNNING_TASK}\n    site_id: {ACME_SITE}\n    status: failed\n"
    )
    result = run(env, "db", "load", str(good))
    assert result.returncode == 0, result.stderr
    assert "1 tasks" in result.stdout


def test_unknown_command_is_a_usage_error(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "fly")
    assert result.returncode == 2
    assert "usage: nico-api" in result.stderr


BAD_AUTH_CONFIG = """
issuers:
  - name: corp
    issuer: https://corp.test
    jwks: https://corp.test/certs
    algorithms: [RS256, none]
    claimMappings:
      - orgName: acme-inc
        roles: [PROVIDER_ADMIN]
"""

GOOD_AUTH_CONFIG = """
leeway: 10s
issuers:
  - name: keycloak
    issuer: https://kc.test/realms/nico
    jwks: https://kc.test/realms/nico/protocol/openid-connect/certs
    audiences: [nico-api]
    scopes: [nico]
    claimMappings:
      - orgName: acme-inc
        orgDisplayName: Acme
        rolesAttribute: realm_access.roles
      - orgName: automation
        isServiceAccount: true
"""


def test_auth_check_refuses_an_invalid_file(cli_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "auth.yaml"
    path.write_text(BAD_AUTH_CONFIG)
    result = run(cli_env, "auth", "check", "--config", str(path))
    assert result.returncode == 1
    assert "issuers[0] (name corp) field 'algorithms'" in result.stderr
    assert "unknown algorithm 'none'" in result.stderr


def test_auth_check_prints_what_it_understood(cli_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "auth.yaml"
    path.write_text(GOOD_AUTH_CONFIG)
    result = run(cli_env, "auth", "check", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "1 issuer(s), leeway 10s" in result.stdout
    assert "- keycloak: iss 'https://kc.test/realms/nico'" in result.stdout
    assert "scopes: nico" in result.stdout
    assert "mapping: org 'acme-inc', roles from claim 'realm_access.roles'" in result.stdout
    assert "mapping: org 'automation' as a service account" in result.stdout


def test_auth_check_without_a_file_shows_the_development_issuer(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "auth", "check")
    assert result.returncode == 0, result.stderr
    assert "- development: iss 'nico-dev'" in result.stdout
    assert "mapping: org from claim 'org'" in result.stdout


def test_auth_whoami(cli_env: dict[str, str]) -> None:
    token = run(
        cli_env, "token", "--org", ACME, "--role", "NICO_PROVIDER_ADMIN", "--create-key"
    ).stdout.strip()
    result = run(cli_env, "auth", "whoami", token)
    assert result.returncode == 0, result.stderr
    assert f"org {ACME}: NICO_PROVIDER_ADMIN" in result.stdout
    assert "issuer: nico-dev" in result.stdout


def test_auth_whoami_says_why_a_token_is_refused(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "auth", "whoami", "not.a.token")
    assert result.returncode == 1
    assert "rejected: 401 Invalid authorization token in request (malformed token" in result.stderr


def test_serve_refuses_to_start_on_an_invalid_auth_file(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "auth.yaml"
    path.write_text(BAD_AUTH_CONFIG)
    result = run({**cli_env, "NICO_AUTH_CONFIG": str(path)}, "serve", "--port", str(free_port()))
    assert result.returncode == 1
    assert "unknown algorithm 'none'" in result.stderr
    assert "Traceback" not in result.stderr


def test_flow_metrics_port_must_be_a_port(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "flow", "--metrics-port", "70000")
    assert result.returncode == 2
    assert "--metrics-port: must be a port number, 1 to 65535" in result.stderr


def test_a_metrics_port_in_use_is_an_error_not_a_traceback(cli_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(cli_env, "flow", "--metrics-port", str(port))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: cannot serve metrics on 127.0.0.1:{port}: Address already in use"
    )
