"""The nico-api command line, run as a user runs it: real processes, real HTTP on loopback."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from nico_api import auth
from nico_api.config import Settings
from tests.demo import ACME, ACME_SITE, RUNNING_TASK, task_path

NICO_API = str(Path(sys.executable).parent / "nico-api")


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NICO_API, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def env(settings: Settings, engine: Engine) -> dict[str, str]:
    return {
        **os.environ,
        "NICO_INSTANCE_DIR": str(settings.instance_dir),
        "NICO_DATABASE_URL": settings.database_url,
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(env: dict[str, str]) -> Iterator[str]:
    assert run(env, "db", "init").returncode == 0
    assert run(env, "db", "seed", "--demo").returncode == 0
    port = _free_port()
    process = subprocess.Popen(
        [NICO_API, "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(base_url + "/openapi.json", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
                time.sleep(0.2)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_served_over_http_with_a_cli_token(server: str, env: dict[str, str]) -> None:
    token = run(env, "token", "--org", ACME, "--role", "PROVIDER_ADMIN").stdout.strip()
    response = httpx.get(
        server + task_path(RUNNING_TASK),
        params={"siteId": ACME_SITE},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200
    assert response.json()["report"]["stages"][1]["steps"][0]["componentType"] == "Compute"

    anonymous = httpx.get(server + task_path(RUNNING_TASK), params={"siteId": ACME_SITE})
    assert anonymous.status_code == 401
    assert anonymous.json()["message"] == auth.MISSING_HEADER


def test_token_command_issues_a_token_the_server_accepts(
    env: dict[str, str], settings: Settings
) -> None:
    result = run(
        env,
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
    authenticator = auth.Authenticator(auth.auth_config_for(settings))
    caller = asyncio.run(authenticator.verify(result.stdout.strip()))
    assert caller.roles_by_org == {ACME: frozenset({"NICO_PROVIDER_ADMIN", "TENANT_ADMIN"})}
    assert (settings.instance_dir / "dev-issuer-key.pem").stat().st_mode & 0o077 == 0


def test_db_load_rejects_a_bad_file_with_a_message(env: dict[str, str], tmp_path: Path) -> None:
    assert run(env, "db", "seed", "--demo").returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"tasks:\n  - id: {RUNNING_TASK}\n    site_id: {ACME_SITE}\n    status: nope\n")
    result = run(env, "db", "load", str(bad))
    assert result.returncode == 1
    assert f"tasks[0] (id {RUNNING_TASK}) field 'status'" in result.stderr
    assert "Traceback" not in result.stderr


def test_db_load_accepts_a_good_file(env: dict[str, str], tmp_path: Path) -> None:
    assert run(env, "db", "seed", "--demo").returncode == 0
    good = tmp_path / "good.yaml"
    good.write_text(
        f"tasks:\n  - id: {RUNNING_TASK}\n    site_id: {ACME_SITE}\n    status: failed\n"
    )
    result = run(env, "db", "load", str(good))
    assert result.returncode == 0, result.stderr
    assert "1 tasks" in result.stdout


def test_unknown_command_is_a_usage_error(env: dict[str, str]) -> None:
    result = run(env, "fly")
    assert result.returncode == 2
    assert "usage: nico-api" in result.stderr
