"""`nico-api proxy` with real traffic over loopback: the generated client's calls to the real
server break nothing; a wrong client's requests and a wrong server's answers are named in
X-Contract-Violations, in the JSON log, in the summary and in the JUnit file."""

from __future__ import annotations

import http.client
import importlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit
from uuid import UUID
from xml.etree import ElementTree

import httpx
import pytest
from starlette.testclient import TestClient

from nico_api.config import SPEC_PATH
from nico_api.proxy.app import ContractProxy
from nico_api.proxy.contract import Contract
from nico_api.proxy.tally import Tally
from tests.demo import (
    ACME,
    ACME_SITE,
    FREE_RACK,
    RUNNING_TASK,
    TERMINATED_TASK,
    TRAY,
    task_path,
)
from tests.fixtures import Bearer
from tests.processes import BIN, NICO_API, free_port, serving
from tests.test_generated_client import nico_client  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
VIOLATIONS = "X-Contract-Violations"
# A token the wrong server accepts: it must never appear in what the proxy writes.
SECRET_TOKEN = "proxy-test-secret-token-7d1f"


def _violations(response: httpx.Response) -> list[dict[str, str]]:
    header = response.headers.get(VIOLATIONS)
    return json.loads(header) if header is not None else []


def _rules(response: httpx.Response) -> set[tuple[str, str, str]]:
    return {(v["operation"], v["side"], v["rule"]) for v in _violations(response)}


@pytest.fixture(scope="module")
def wrong_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("wrong-upstream") / "server.log"
    command = [str(BIN / "uvicorn"), "tests.wrong_upstream:app", "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with serving(command, env, log, port) as base_url:
        yield base_url


def _proxy_command(target: str, port: int, *options: str) -> list[str]:
    return [NICO_API, "proxy", "--target", target, "--port", str(port), *options]


@pytest.fixture(scope="module")
def proxy_to_server(demo_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The proxy in front of the real `nico-api serve` (the demo data, only read)."""
    port = free_port()
    log = tmp_path_factory.mktemp("proxy-to-server") / "proxy.log"
    with serving(_proxy_command(demo_server, port), os.environ, log, port) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def proxy_to_wrong(wrong_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("proxy-to-wrong") / "proxy.log"
    with serving(_proxy_command(wrong_upstream, port), os.environ, log, port) as base_url:
        yield base_url


def test_generated_client_breaks_nothing(
    nico_client: ModuleType,  # noqa: F811
    proxy_to_server: str,
    bearer: Bearer,
) -> None:
    task_api = importlib.import_module("nico_client.api.task")
    models = importlib.import_module("nico_client.models")
    for name in ("get_task", "get_rack_task", "cancel_task", "get_all_tasks"):
        importlib.import_module(f"nico_client.api.task.{name}")
    get_rack_tasks = importlib.import_module("nico_client.api.rack.get_rack_tasks")
    get_tray_tasks = importlib.import_module("nico_client.api.tray.get_tray_tasks")
    get_openapi = importlib.import_module("nico_client.api.specification.get_openapi")
    token = bearer()["Authorization"].removeprefix("Bearer ")
    client = nico_client.AuthenticatedClient(base_url=proxy_to_server, token=token)
    site = UUID(ACME_SITE)

    answers = {
        "get-task": task_api.get_task.sync_detailed(
            org=ACME, id=UUID(RUNNING_TASK), client=client, site_id=site
        ),
        "get-rack-task": task_api.get_rack_task.sync_detailed(
            org=ACME, id=UUID(RUNNING_TASK), client=client, site_id=site
        ),
        "get-task 404": task_api.get_task.sync_detailed(
            org=ACME, id=UUID("00000000-0000-4000-8000-000000000000"), client=client, site_id=site
        ),
        "get-all-tasks": task_api.get_all_tasks.sync_detailed(
            org=ACME, client=client, site_id=site, page_size=2, page_number=2
        ),
        "get-all-tasks past the end": task_api.get_all_tasks.sync_detailed(
            org=ACME, client=client, site_id=site, page_number=50, include_report=True
        ),
        "get-rack-tasks": get_rack_tasks.sync_detailed(
            org=ACME, id=FREE_RACK, client=client, site_id=site
        ),
        "get-tray-tasks": get_tray_tasks.sync_detailed(
            org=ACME, id=TRAY, client=client, site_id=site, active_only=True
        ),
        # A Terminated task is returned unchanged: nothing of the shared server changes.
        "cancel-task": task_api.cancel_task.sync_detailed(
            org=ACME,
            id=UUID(TERMINATED_TASK),
            client=client,
            body=models.CancelTaskBody(site_id=site),
        ),
        "get-openapi": get_openapi.sync_detailed(client=nico_client.Client(proxy_to_server)),
    }
    statuses = {name: answer.status_code for name, answer in answers.items()}
    assert statuses == {
        "get-task": 200,
        "get-rack-task": 200,
        "get-task 404": 404,
        "get-all-tasks": 200,
        "get-all-tasks past the end": 200,
        "get-rack-tasks": 200,
        "get-tray-tasks": 200,
        "cancel-task": 202,
        "get-openapi": 200,
    }
    assert {name: a.headers.get(VIOLATIONS) for name, a in answers.items()} == dict.fromkeys(
        answers
    )
    assert isinstance(answers["get-task"].parsed, models.Task)
    assert answers["cancel-task"].parsed.status is models.TaskStatus.TERMINATED
    assert json.loads(answers["get-all-tasks"].headers["X-Pagination"])["pageNumber"] == 2


def test_request_and_answer_pass_unchanged(
    proxy_to_server: str, demo_server: str, bearer: Bearer
) -> None:
    # The caller's own request id is echoed: the proxy forwards headers as sent.
    headers = {**bearer(), "X-Request-ID": "proxy-unchanged-1"}
    path = task_path(RUNNING_TASK) + f"?siteId={ACME_SITE}"
    direct = httpx.get(demo_server + path, headers=headers)
    proxied = httpx.get(proxy_to_server + path, headers=headers)
    assert proxied.status_code == direct.status_code == 200
    assert proxied.content == direct.content
    leave_out = {"date"}
    assert {k: v for k, v in proxied.headers.items() if k not in leave_out} == {
        k: v for k, v in direct.headers.items() if k not in leave_out
    }
    assert proxied.headers["X-Request-ID"] == "proxy-unchanged-1"


def test_wrong_client_requests_are_named(proxy_to_server: str, bearer: Bearer) -> None:
    bad_site = httpx.get(
        proxy_to_server + task_path(RUNNING_TASK), params={"siteId": "not-a-site"}, headers=bearer()
    )
    # The server refuses it, with its envelope: only the client is at fault.
    assert bad_site.status_code == 400
    assert _violations(bad_site) == [
        {
            "operation": "get-task",
            "side": "client",
            "rule": "parameter-invalid",
            "seen": "siteId='not-a-site': not a uuid",
        }
    ]

    no_state = httpx.patch(
        proxy_to_server + f"/v2/org/{ACME}/nico/rack/{FREE_RACK}/power",
        json={"siteId": ACME_SITE},
        headers=bearer(),
    )
    assert no_state.status_code == 400
    assert _violations(no_state) == [
        {
            "operation": "power-control-rack",
            "side": "client",
            "rule": "body-schema",
            "seen": "/: 'state' is a required property",
        }
    ]

    no_site = httpx.post(
        proxy_to_server + task_path(TERMINATED_TASK) + "/cancel",
        json={},
        headers=bearer(),
    )
    assert no_site.status_code == 400
    assert _rules(no_site) == {("cancel-task", "client", "body-schema")}

    anonymous = httpx.get(
        proxy_to_server + f"/v2/org/{ACME}/nico/task", params={"siteId": ACME_SITE, "sort": "x"}
    )
    assert anonymous.status_code in (400, 401)
    assert _rules(anonymous) == {
        ("get-all-tasks", "client", "token-missing"),
        ("get-all-tasks", "client", "parameter-undeclared"),
    }

    nowhere = httpx.get(proxy_to_server + f"/v2/org/{ACME}/nico/tasks", headers=bearer())
    assert nowhere.status_code == 404
    assert _violations(nowhere) == [
        {
            "operation": "(no operation)",
            "side": "client",
            "rule": "path-undeclared",
            "seen": f"GET /v2/org/{ACME}/nico/tasks",
        }
    ]


def test_a_request_reaches_the_target_as_the_client_sent_it(
    proxy_to_wrong: str, wrong_upstream: str
) -> None:
    """Method, path and query as encoded, headers with nothing added but the target's Host,
    the body; and no cookie the target set comes back with another client."""
    proxy = urlsplit(proxy_to_wrong).netloc
    path = "/echo/a%2fb/./c%7E?x=1%20&y&x=2"
    headers = [("Host", proxy), ("X-One", "1"), ("x-one", "2"), ("Content-Type", "text/plain")]
    connection = http.client.HTTPConnection(proxy, timeout=10)
    try:
        # http.client sends the path and the headers exactly as given.
        connection.putrequest("POST", path, skip_host=True, skip_accept_encoding=True)
        for name, value in [*headers, ("Content-Length", "7")]:
            connection.putheader(name, value)
        connection.endheaders(b"as sent")
        seen = json.loads(connection.getresponse().read())
    finally:
        connection.close()
    assert (seen["method"], seen["raw_path"], seen["query"]) == (
        "POST",
        "/echo/a%2fb/./c%7E",
        "x=1%20&y&x=2",
    )
    assert seen["headers"] == [
        ["host", urlsplit(wrong_upstream).netloc],
        *([name.lower(), value] for name, value in headers[1:]),
        ["content-length", "7"],
    ]
    assert seen["body"] == "as sent"
    again = httpx.get(proxy_to_wrong + "/echo/again").json()
    assert "cookie" not in {name for name, _ in again["headers"]}


def _raw_request(base_url: str, path: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    """A GET sent byte for byte as given; the whole answer (the proxy closes after it)."""
    with socket.create_connection(("127.0.0.1", urlsplit(base_url).port or 80), 10) as sock:
        head = b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        sock.sendall(head + b"".join(n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_non_ascii_header_bytes_reach_the_target_unchanged(proxy_to_wrong: str) -> None:
    answer = _raw_request(proxy_to_wrong, "/echo/bytes", [(b"X-Name", "café".encode())])
    seen = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert ["x-name", "café".encode().decode("latin-1")] in seen["headers"]


def test_header_bytes_that_are_not_utf8_are_refused_not_changed(proxy_to_wrong: str) -> None:
    answer = _raw_request(proxy_to_wrong, "/echo/bytes", [(b"X-Name", b"caf\xe9")])
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert json.loads(body)["source"] == "nico"
    assert b"not-forwardable" in head


def test_an_answer_with_a_long_header_is_passed_on(proxy_to_wrong: str) -> None:
    response = httpx.get(proxy_to_wrong + "/echo/long?long-header=1")
    assert response.status_code == 200
    assert len(response.headers["link"]) > 10_000


def test_an_answer_broken_off_after_its_head_is_a_502_envelope(proxy_to_wrong: str) -> None:
    headers = {"Authorization": f"Bearer {SECRET_TOKEN}"}
    path = f"/v2/org/{ACME}/nico/rack/{UUID(int=1)}/task"
    response = httpx.get(proxy_to_wrong + path, params={"siteId": ACME_SITE}, headers=headers)
    assert response.status_code == 502
    assert response.json()["source"] == "nico"
    # The proxy goes on serving.
    assert httpx.get(proxy_to_wrong + "/healthz").status_code == 200


def test_an_answer_that_inflates_past_the_checked_size_passes_unchecked(
    proxy_to_wrong: str,
) -> None:
    headers = {"Authorization": f"Bearer {SECRET_TOKEN}", "Accept-Encoding": "gzip"}
    path = f"/v2/org/{ACME}/nico/tray/{UUID(int=1)}/task"
    with httpx.stream(
        "GET", proxy_to_wrong + path, params={"siteId": ACME_SITE}, headers=headers
    ) as response:
        raw = b"".join(response.iter_raw())
    assert response.status_code == 200
    assert raw == wrong_upstream_module().BOMB
    assert httpx.get(proxy_to_wrong + "/healthz").status_code == 200


def wrong_upstream_module() -> ModuleType:
    return importlib.import_module("tests.wrong_upstream")


def test_wrong_server_answers_are_named(proxy_to_wrong: str) -> None:
    headers = {"Authorization": f"Bearer {SECRET_TOKEN}"}
    dropped = httpx.get(
        proxy_to_wrong + task_path(RUNNING_TASK), params={"siteId": ACME_SITE}, headers=headers
    )
    assert dropped.status_code == 200
    # The answer passes through as the server sent it, field missing and all.
    assert "message" not in dropped.json()
    assert _violations(dropped) == [
        {
            "operation": "get-task",
            "side": "server",
            "rule": "body-schema",
            "seen": "/: 'message' is a required property",
        }
    ]

    crashed = httpx.post(
        proxy_to_wrong + task_path(RUNNING_TASK) + "/cancel",
        json={"siteId": ACME_SITE},
        headers=headers,
    )
    assert (crashed.status_code, crashed.text) == (500, "upstream exploded")
    assert _rules(crashed) == {
        ("cancel-task", "server", "error-envelope"),
        ("cancel-task", "server", "media-type"),
    }

    listed = httpx.get(
        proxy_to_wrong + f"/v2/org/{ACME}/nico/task", params={"siteId": ACME_SITE}, headers=headers
    )
    assert listed.status_code == 200
    assert _violations(listed) == [
        {
            "operation": "get-all-tasks",
            "side": "server",
            "rule": "pagination-total",
            "seen": "total 5, page 1 of size 20 holds 2 tasks, not 5",
        }
    ]

    foreign = httpx.get(proxy_to_wrong + f"/v2/org/{ACME}/nico/user/current", headers=headers)
    assert foreign.status_code == 403
    assert _violations(foreign) == [
        {
            "operation": "get-user",
            "side": "server",
            "rule": "error-source",
            "seen": "403 source 'gateway'",
        }
    ]


def _summary_rows(summary: str) -> dict[str, tuple[int, int]]:
    """Each operation's exchanges and violations, as the summary prints them."""
    rows = {}
    for line in summary.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            rows[parts[0]] = (int(parts[1]), int(parts[2]))
    return rows


def _stop(process: subprocess.Popen[str], stopping: signal.Signals) -> tuple[str, str]:
    process.send_signal(stopping)
    out, err = process.communicate(timeout=30)
    return out, err


def _started(command: list[str], port: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return process
        except httpx.TransportError:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the proxy did not start"
            time.sleep(0.2)


def test_exit_summary_junit_and_log(wrong_upstream: str, tmp_path: Path) -> None:
    port = free_port()
    junit = tmp_path / "proxy.xml"
    command = _proxy_command(wrong_upstream, port, "--junit", str(junit), "--fail-on-violation")
    process = _started(command, port)
    base_url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {SECRET_TOKEN}"}
    httpx.get(base_url + task_path(RUNNING_TASK), params={"siteId": ACME_SITE}, headers=headers)
    httpx.post(base_url + task_path(RUNNING_TASK) + "/cancel", json={"siteId": ACME_SITE})
    out, err = _stop(process, signal.SIGINT)

    assert process.returncode == 1, err
    assert _summary_rows(out) == {
        "get-health": (1, 0),
        "get-task": (1, 1),
        "cancel-task": (1, 3),
        "all": (3, 4),
    }
    assert "server body-schema (1x), first seen: /: 'message' is a required property" in out
    assert out.rstrip().endswith("FAILED")
    cases = {
        case.get("name"): [failure.get("type") for failure in case.iter("failure")]
        for case in ElementTree.parse(junit).iter("testcase")
    }
    assert cases == {
        "get-health": [],
        "get-task": ["body-schema"],
        "cancel-task": ["token-missing", "error-envelope", "media-type"],
    }
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    logged = [line for line in lines if line["message"] == "contract violation"]
    assert {(line["operation"], line["side"], line["rule"]) for line in logged} == {
        ("get-task", "server", "body-schema"),
        ("cancel-task", "server", "error-envelope"),
        ("cancel-task", "server", "media-type"),
        ("cancel-task", "client", "token-missing"),
    }
    assert logged[0]["path"] == "/v2/org/{org}/nico/task/{id}"
    # Never a token, never a body.
    for text in (out, err, junit.read_text()):
        assert SECRET_TOKEN not in text
        assert "upstream exploded" not in text
        assert "Power on rack" not in text


def test_sigterm_without_violations_exits_zero(wrong_upstream: str) -> None:
    port = free_port()
    process = _started(_proxy_command(wrong_upstream, port, "--fail-on-violation"), port)
    out, err = _stop(process, signal.SIGTERM)
    assert process.returncode == 0, err
    assert _summary_rows(out) == {"get-health": (1, 0), "all": (1, 0)}
    assert out.rstrip().endswith("PASSED")


def test_unreachable_target_and_large_body(caplog: pytest.LogCaptureFixture) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    tally = Tally(target=nowhere)
    proxy = ContractProxy(nowhere, Contract.from_path(SPEC_PATH), tally, max_body_bytes=64)
    cancel = task_path(RUNNING_TASK) + "/cancel"
    with caplog.at_level(logging.INFO, "nico_api.proxy"), TestClient(proxy) as client:
        unreachable = client.post(cancel, json={"siteId": ACME_SITE})
        too_large = client.post(cancel, json={"siteId": ACME_SITE, "padding": "x" * 64})
    assert unreachable.status_code == 502
    assert unreachable.json() == {
        "source": "nico",
        "message": "Bad Gateway: the target did not answer",
        "data": {"target": nowhere},
    }
    [line] = [r for r in caplog.records if r.getMessage() == "target unreachable"]
    assert line.fields["target"] == nowhere
    assert "Cannot connect to host" in line.fields["error"]
    # Refused as the server refuses it, by its length, never forwarded.
    assert too_large.status_code == 413
    assert too_large.json() == {
        "source": "nico",
        "message": "Request Entity Too Large",
        "data": None,
    }
    assert tally.operations["cancel-task"].exchanges == 2
    assert dict(tally.operations["cancel-task"].broken) == {
        ("client", "token-missing"): 2,
        ("client", "body-too-large"): 1,
    }
