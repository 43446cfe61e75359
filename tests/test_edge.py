"""The HTTP edge over real sockets against `nico-api serve`: request heads bounded in size and
time, idle and slow connections closed, bodies bounded before they are read, and every refusal
in the envelope while other clients are served as usual."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.demo import ACME, ACME_SITE, PENDING_TASK, RUNNING_TASK, task_path
from tests.processes import NICO_API, free_port, run, serving

# Real processes, servers or browsers: run by `make test`, left out by `make test-fast`.
pytestmark = pytest.mark.slow

HEADER_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def edge_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, str]]:
    """`nico-api serve` with a 1 s header timeout, shared by this module's tests (the edge is
    the same whatever the database, so SQLite serves): base URL, port, a member's token."""
    folder = tmp_path_factory.mktemp("edge")
    env = {
        **os.environ,
        "NICO_INSTANCE_DIR": str(folder / "instance"),
        "NICO_DATABASE_URL": f"sqlite:///{folder / 'nico.db'}",
        "NICO_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "NICO_MAX_BODY_BYTES": "65536",
    }
    assert run(env, "db", "init").returncode == 0
    assert run(env, "db", "seed", "--demo").returncode == 0
    token = run(env, "token", "--org", ACME, "--role", "PROVIDER_ADMIN", "--create-key")
    assert token.returncode == 0, token.stderr
    port = free_port()
    command = [NICO_API, "serve", "--port", str(port)]
    with serving(command, env, folder / "server.log", port) as base_url:
        yield base_url, port, token.stdout.strip()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one response to its end (the server closes the connection after a refusal)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def cancel_head(token: str, length: int) -> bytes:
    """The head of a cancel of the pending demo task, declaring a body of `length` bytes."""
    return (
        f"POST /v2/org/{ACME}/nico/task/{PENDING_TASK}/cancel HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode()


def closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def get_task(base_url: str, token: str) -> httpx.Response:
    return httpx.get(
        base_url + task_path(RUNNING_TASK),
        params={"siteId": ACME_SITE},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )


def envelope(message: str) -> dict[str, object]:
    return {"source": "nico", "message": message, "data": None}


def test_a_header_over_the_limit_is_431(edge_server) -> None:
    _base_url, port, _token = edge_server
    with connect(port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
        status, headers, body = answer(sock)
    assert status == 431
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == envelope("Request Header Fields Too Large")


def test_others_are_served_while_a_client_sends_a_60_mb_header(edge_server) -> None:
    base_url, port, token = edge_server
    sent = threading.Event()

    def send_huge_header() -> None:
        with connect(port) as sock:
            try:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
                for _ in range(60 * 16):
                    sock.sendall(b"a" * 65536)
            except OSError:
                pass  # refused, and closed once the answer had time to arrive
            sent.set()

    sender = threading.Thread(target=send_huge_header, daemon=True)
    sender.start()
    slowest = 0.0
    while not sent.is_set():
        started = time.monotonic()
        assert get_task(base_url, token).status_code == 200
        slowest = max(slowest, time.monotonic() - started)
    sender.join(timeout=10)
    assert slowest < 2.0  # the whole 60 MB head would stall the server for seconds


@pytest.mark.parametrize(
    "request_line",
    [b"NOT A REQUEST", b"FETCH /healthz HTTP/1.1"],
    ids=["garbage", "unknown-method"],
)
def test_a_malformed_request_line_is_400_in_the_envelope(edge_server, request_line: bytes) -> None:
    _base_url, port, _token = edge_server
    with connect(port) as sock:
        sock.sendall(request_line + b"\r\nHost: x\r\n\r\n")
        status, headers, body = answer(sock)
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["source"] == "nico"


def test_idle_connections_are_closed_after_the_header_timeout(edge_server) -> None:
    base_url, port, token = edge_server
    idle = [connect(port) for _ in range(200)]
    try:
        started = time.monotonic()
        response = get_task(base_url, token)
        assert response.status_code == 200 and time.monotonic() - started < 1
        assert all(closed_within(sock, HEADER_TIMEOUT + 2) for sock in idle)
    finally:
        for sock in idle:
            sock.close()


def test_a_head_sent_a_byte_at_a_time_is_cut_off(edge_server) -> None:
    _base_url, port, _token = edge_server
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    with connect(port) as sock:
        started = time.monotonic()
        try:
            for byte in head:
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert closed_within(sock, 2)
    # Every byte arrived in time, yet the head as a whole took too long.
    assert time.monotonic() - started < HEADER_TIMEOUT + 2


def test_a_declared_huge_body_is_413_before_it_is_read(edge_server) -> None:
    _base_url, port, token = edge_server
    with connect(port) as sock:
        sock.sendall(cancel_head(token, 200 * 2**20))
        status, _headers, body = answer(sock)
    assert status == 413
    assert json.loads(body) == envelope("Request Entity Too Large")


def test_an_undeclared_body_is_cut_off_at_the_limit(edge_server) -> None:
    base_url, _port, token = edge_server

    def chunks() -> Iterator[bytes]:
        yield b'{"siteId": "' + ACME_SITE.encode() + b'", "padding": "'
        for _ in range(64):
            yield b"a" * 4096
        yield b'"}'

    response = httpx.post(
        base_url + f"/v2/org/{ACME}/nico/task/{PENDING_TASK}/cancel",
        content=chunks(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 413
    assert response.json()["message"] == "Request Entity Too Large"


def test_an_unterminated_header_is_431_as_it_arrives(edge_server) -> None:
    _base_url, port, _token = edge_server
    with connect(port) as sock:
        started = time.monotonic()
        # One header that never ends: no parser callback would ever see it whole.
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000)
        status, _headers, body = answer(sock)
    assert status == 431
    assert json.loads(body)["message"] == "Request Header Fields Too Large"
    assert time.monotonic() - started < HEADER_TIMEOUT


def test_a_body_sent_with_its_head_does_not_count_as_head(edge_server) -> None:
    _base_url, port, token = edge_server
    body = b'{"siteId": "' + ACME_SITE.encode() + b'", "padding": "' + b"a" * 60_000 + b'"}'
    with connect(port) as sock:
        sock.sendall(cancel_head(token, len(body)) + body)
        status, _headers, _body = answer(sock)
    assert status == 202
