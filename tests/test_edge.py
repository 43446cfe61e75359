"""The HTTP edge over real sockets against `nico-api serve`: request heads bounded in size by
uvicorn's settings, bodies bounded in size and in time by the app's guard, every refusal of a
body in the envelope with the connection closed, and other clients served meanwhile."""

from __future__ import annotations

import json
import os
import re
import resource
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from nico_api.web import edge
from tests.demo import ACME, ACME_SITE, COMPLETED_TASK, PENDING_TASK, RUNNING_TASK, task_path
from tests.processes import NICO_API, free_port, run, serving

# Real processes, servers or browsers: run by `make test`, left out by `make test-fast`.
pytestmark = pytest.mark.slow

BODY_TIMEOUT = 1.0
KEEPALIVE_TIMEOUT = 1.0
MAX_BODY = 1 << 20
MAX_HEAD = 64 << 10
FILE_LIMIT = 256
SLOW_CLIENTS = 1000
# Long enough that a loaded machine serves one request while 1,000 slow bodies are held.
HELD_BODY_TIMEOUT = 5.0


class EdgeServer:
    def __init__(self, base_url: str, port: int, token: str, log: Path) -> None:
        self.base_url, self.port, self.token, self.log = base_url, port, token, log


def prepared(folder: Path) -> tuple[dict[str, str], str]:
    """An environment with the demo data in `folder`, body and keep-alive timeouts of 1 s, and a
    member's token."""
    env = {
        **os.environ,
        "NICO_INSTANCE_DIR": str(folder / "instance"),
        "NICO_DATABASE_URL": f"sqlite:///{folder / 'nico.db'}",
        "NICO_BODY_TIMEOUT": str(BODY_TIMEOUT),
        "NICO_KEEPALIVE_TIMEOUT": str(KEEPALIVE_TIMEOUT),
    }
    assert run(env, "db", "init").returncode == 0
    assert run(env, "db", "seed", "--demo").returncode == 0
    token = run(env, "token", "--org", ACME, "--role", "PROVIDER_ADMIN", "--create-key")
    assert token.returncode == 0, token.stderr
    return env, token.stdout.strip()


@pytest.fixture(scope="module")
def edge_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeServer]:
    """`nico-api serve` with the default limits, 1 s timeouts and at most 256 open files,
    shared by this module's tests (the edge is the same whatever the database, so SQLite
    serves)."""
    folder = tmp_path_factory.mktemp("edge")
    env, token = prepared(folder)
    port = free_port()
    log = folder / "server.log"
    command = [NICO_API, "serve", "--port", str(port)]
    with serving(command, env, log, port, preexec_fn=low_file_limit) as base_url:
        yield EdgeServer(base_url, port, token, log)


def low_file_limit() -> None:
    """In the server's process: at most FILE_LIMIT open files, sockets included."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILE_LIMIT, FILE_LIMIT))


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def answer(sock: socket.socket, buffered: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Read one response to the end of the connection (the server closes it after a refusal),
    after the bytes of it already read."""
    data = buffered
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def cancel_head(token: str, length: int, task: str = PENDING_TASK, close: bool = True) -> bytes:
    """The head of a cancel of `task`, declaring a body of `length` bytes."""
    connection = "Connection: close\r\n" if close else ""
    return (
        f"POST /v2/org/{ACME}/nico/task/{task}/cancel HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n{connection}\r\n"
    ).encode()


def cancel_body(size: int) -> bytes:
    """A valid cancel body of exactly `size` bytes: the Site id, padded with spaces."""
    body = b'{"siteId":"' + ACME_SITE.encode() + b'"}'
    return body + b" " * (size - len(body))


def closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def get_task(base_url: str, token: str, timeout: float = 5) -> httpx.Response:
    return httpx.get(
        base_url + task_path(RUNNING_TASK),
        params={"siteId": ACME_SITE},
        headers={"Authorization": f"Bearer {token}"},
        timeout=timeout,
    )


def envelope(message: str) -> dict[str, object]:
    return {"source": "nico", "message": message, "data": None}


def access_log(log: Path, request_id: str) -> dict[str, object]:
    """The access log's record of one request, by its X-Request-ID."""
    for line in log.read_text().splitlines():
        if request_id in line and '"request"' in line:
            return json.loads(line)
    raise AssertionError(f"no access log record of {request_id}")


def requests_counted(base_url: str, status: int) -> float:
    """nico_http_requests_total for `status`, summed over operations."""
    text = httpx.get(base_url + "/metrics", timeout=5).text
    pattern = rf'^nico_http_requests_total{{[^}}]*status="{status}"[^}}]*}} (\S+)$'
    return sum(float(value) for value in re.findall(pattern, text, re.MULTILINE))


# The head: uvicorn's h11_max_incomplete_event_size (NICO_MAX_HEADER_BYTES).


def test_a_head_just_under_the_limit_is_served(edge_server) -> None:
    with connect(edge_server.port) as sock:
        padding = b"a" * (MAX_HEAD - 1024)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + padding + b"\r\n")
        sock.sendall(b"Connection: close\r\n\r\n")
        status, _headers, _body = answer(sock)
    assert status == 200


def test_a_head_over_the_limit_is_refused_and_the_connection_closed(edge_server) -> None:
    with connect(edge_server.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEAD + 1024))
        status, headers, _body = answer(sock)
    # uvicorn's own answer to a head its parser refuses: plain text, before any app runs.
    assert status == 400
    assert headers["connection"] == "close"


def test_others_are_served_while_a_client_sends_a_60_mb_header(edge_server) -> None:
    sent = threading.Event()

    def send_huge_header() -> None:
        with connect(edge_server.port) as sock:
            try:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
                for _ in range(60 * 16):
                    sock.sendall(b"a" * 65536)
            except OSError:
                pass  # refused and closed at the limit
            sent.set()

    sender = threading.Thread(target=send_huge_header, daemon=True)
    sender.start()
    slowest = 0.0
    while not sent.is_set():
        started = time.monotonic()
        assert get_task(edge_server.base_url, edge_server.token).status_code == 200
        slowest = max(slowest, time.monotonic() - started)
    sender.join(timeout=10)
    assert slowest < 2.0


def next_answer(sock: socket.socket, buffered: bytes = b"") -> tuple[int, bytes, bytes]:
    """One response on a kept-alive connection: its status, its body (by its length) and the
    bytes read past it."""
    data = buffered
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length: *(\d+)", head).group(1))
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(head.split()[1]), rest[:length], rest[length:]


def test_heads_near_the_limit_are_served_one_after_another_on_a_kept_alive_connection(
    edge_server,
) -> None:
    # The head's bound applies to each request's own head, not to the connection's bytes.
    padding = b"a" * (MAX_HEAD - 1024)
    with connect(edge_server.port) as sock:
        for _ in range(5):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + padding + b"\r\n\r\n")
            status, body, rest = next_answer(sock)
            assert (status, json.loads(body), rest) == (200, {"status": "ok"}, b"")
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEAD + 1024))
        status, headers, _body = answer(sock)
    assert status == 400
    assert headers["connection"] == "close"


@pytest.mark.parametrize("method", [b"FETCH", b"get"])
def test_a_method_the_parser_does_not_know_is_405_on_a_kept_alive_connection(
    edge_server, method: bytes
) -> None:
    # Any token is a method: a request with one the fast parser does not know is read by h11,
    # after a request served on the same connection, and routed as production routes it.
    with connect(edge_server.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert next_answer(sock)[0] == 200
        sock.sendall(method + b" /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, body, _rest = next_answer(sock)
        assert (status, json.loads(body)["source"]) == (405, "nico")
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, _headers, _body = answer(sock)
    assert status == 200


def test_an_upgrade_the_server_does_not_offer_is_answered_as_a_plain_request(edge_server) -> None:
    with connect(edge_server.port) as sock:
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
        )
        status, body, _rest = next_answer(sock)
    assert (status, json.loads(body)) == (200, {"status": "ok"})


@pytest.mark.parametrize("before", [1, 3])
def test_an_unknown_method_pipelined_after_requests_is_400_once_they_are_answered(
    edge_server, before: int
) -> None:
    # Where it starts in the read is unknown to the fast parser: uvicorn's 400 (differences.md),
    # after the answers to the requests before it.
    task = f"{task_path(RUNNING_TASK)}?siteId={ACME_SITE}".encode()
    get = b"GET " + task + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
    get += edge_server.token.encode() + b"\r\n\r\n"
    with connect(edge_server.port) as sock:
        sock.sendall(get * before + b"FETCH /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        rest = b""
        for _ in range(before):
            status, body, rest = next_answer(sock, rest)
            assert (status, json.loads(body)["id"]) == (200, RUNNING_TASK)
        status, headers, _body = answer(sock, rest)
    assert status == 400
    assert headers["connection"] == "close"


def test_a_malformed_request_line_is_400_and_closed(edge_server) -> None:
    with connect(edge_server.port) as sock:
        sock.sendall(b"NOT A REQUEST\r\nHost: x\r\n\r\n")
        status, headers, _body = answer(sock)
    assert status == 400
    assert headers["connection"] == "close"


def test_an_unknown_method_reaches_the_app_and_is_405_in_the_envelope(edge_server) -> None:
    with connect(edge_server.port) as sock:
        sock.sendall(b"FETCH /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, _headers, body = answer(sock)
    assert status == 405
    assert json.loads(body)["source"] == "nico"


def test_an_idle_kept_alive_connection_is_closed(edge_server) -> None:
    """uvicorn's timeout_keep_alive (NICO_KEEPALIVE_TIMEOUT)."""
    with connect(edge_server.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while not data.endswith(b'{"status":"ok"}\n'):
            data += sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert closed_within(sock, KEEPALIVE_TIMEOUT + 3)
    assert time.monotonic() - started >= KEEPALIVE_TIMEOUT * 0.9


# The body: the app's guard (NICO_MAX_BODY_BYTES, NICO_BODY_TIMEOUT).


@pytest.mark.parametrize("size", [60_000, 70_000, 500_000], ids=["60KB", "70KB", "500KB"])
def test_a_body_under_the_limit_is_answered_as_a_small_one(edge_server, size: int) -> None:
    """The body counts against the body limit only, never against the head's."""
    answers = []
    for body in (cancel_body(0), cancel_body(size)):
        with connect(edge_server.port) as sock:
            sock.sendall(cancel_head(edge_server.token, len(body), COMPLETED_TASK) + body)
            status, _headers, content = answer(sock)
        answers.append((status, json.loads(content)))
    assert answers[1] == answers[0]
    assert answers[0][0] not in (400, 408, 413, 431)


def test_a_body_of_exactly_the_limit_is_read_and_the_task_cancelled(edge_server) -> None:
    body = cancel_body(MAX_BODY)
    with connect(edge_server.port) as sock:
        sock.sendall(cancel_head(edge_server.token, len(body)) + body)
        status, _headers, content = answer(sock)
    assert status == 202, content
    assert json.loads(content)["id"] == PENDING_TASK


def test_a_declared_body_over_the_limit_is_413_unread_and_closed(edge_server) -> None:
    with connect(edge_server.port) as sock:
        started = time.monotonic()
        # Only the head: the 1 MiB + 1 byte body is refused without waiting for any of it.
        sock.sendall(cancel_head(edge_server.token, MAX_BODY + 1, close=False))
        status, headers, body = answer(sock)
    assert time.monotonic() - started < BODY_TIMEOUT
    assert status == 413
    assert headers["connection"] == "close"
    assert json.loads(body) == envelope("Request Entity Too Large")
    record = access_log(edge_server.log, headers["x-request-id"])
    assert record["status"] == 413


def test_an_undeclared_body_is_cut_off_at_the_limit(edge_server) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"siteId": "' + ACME_SITE.encode() + b'", "padding": "'
        for _ in range(300):
            yield b"a" * 4096
        yield b'"}'

    response = httpx.post(
        edge_server.base_url + f"/v2/org/{ACME}/nico/task/{PENDING_TASK}/cancel",
        content=chunks(),
        headers={
            "Authorization": f"Bearer {edge_server.token}",
            "Content-Type": "application/json",
        },
        timeout=10,
    )
    assert response.status_code == 413
    assert response.json() == envelope("Request Entity Too Large")


def test_a_body_not_sent_in_time_is_408_and_closed(edge_server) -> None:
    before = requests_counted(edge_server.base_url, 408)
    with connect(edge_server.port) as sock:
        sock.sendall(cancel_head(edge_server.token, 100, COMPLETED_TASK, close=False) + b'{"si')
        started = time.monotonic()
        status, headers, body = answer(sock)
    assert BODY_TIMEOUT * 0.9 <= time.monotonic() - started < BODY_TIMEOUT + 2
    assert status == 408
    assert headers["connection"] == "close"
    assert json.loads(body) == envelope("Request Timeout")
    assert access_log(edge_server.log, headers["x-request-id"])["status"] == 408
    assert requests_counted(edge_server.base_url, 408) == before + 1


def test_a_refused_token_closes_the_connection_without_reading_the_body(edge_server) -> None:
    with connect(edge_server.port) as sock:
        head = cancel_head("not-a-token", 100_000, COMPLETED_TASK, close=False)
        sock.sendall(head + b'{"siteId"')
        started = time.monotonic()
        status, headers, body = answer(sock)
    assert time.monotonic() - started < BODY_TIMEOUT
    assert status == 401
    assert headers["connection"] == "close"
    assert json.loads(body)["source"] == "nico"


def test_a_kept_alive_connection_serves_the_next_request_after_a_full_body(edge_server) -> None:
    """A body read to its end leaves the connection open for the next request."""
    body = cancel_body(70_000)
    with connect(edge_server.port) as sock:
        head = cancel_head(edge_server.token, len(body), COMPLETED_TASK, close=False)
        sock.sendall(head + body)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    first, second = data.split(b"HTTP/1.1 ")[1:]
    assert b"connection: close" not in first.partition(b"\r\n\r\n")[0].lower()
    assert second.startswith(b"200")


@contextmanager
def slow_bodies(port: int, token: str) -> Iterator[list[socket.socket]]:
    """SLOW_CLIENTS connections, each sending a head and then too little of its body (this
    process allowed as many open files as it may have, for its end of each)."""
    assert edge.open_every_file_allowed() > SLOW_CLIENTS + 64, "too few open files allowed here"
    slow: list[socket.socket] = []
    try:
        for _ in range(SLOW_CLIENTS):
            sock = connect(port)
            sock.sendall(cancel_head(token, 100, COMPLETED_TASK, close=False) + b"{")
            slow.append(sock)
        yield slow
    finally:
        for sock in slow:
            sock.close()


def all_timed_out(slow: list[socket.socket]) -> None:
    for sock in slow:
        status, headers, _body = answer(sock)
        assert (status, headers["connection"]) == (408, "close")


def test_slow_bodies_beyond_the_file_limit_leave_others_served(edge_server) -> None:
    """1,000 connections that send a head and then too little of a body, against a server
    allowed 256 open files: each is answered 408 and closed at the body deadline, and a client
    that comes after them, while the server is out of file descriptors, waits in the listen
    backlog and is served at its first try (out of files, asyncio accepts again a second
    later, so the backlog drains in waves, each ended by the body deadline)."""
    with slow_bodies(edge_server.port, edge_server.token) as slow:
        assert get_task(edge_server.base_url, edge_server.token, timeout=120).status_code == 200
        all_timed_out(slow)


def test_the_server_opens_as_many_files_as_its_hard_limit_allows(tmp_path: Path) -> None:
    """Started with a soft limit of 256 open files and a hard one of 4,096, `nico-api serve`
    raises its own to 4,096 (as Go's runtime does for production's server): 1,000 slow bodies
    are all held at once, and another client is served before any of their deadlines (which
    at the 256 limit it would wait for, several times over)."""
    env, token = prepared(tmp_path)
    env["NICO_BODY_TIMEOUT"] = str(HELD_BODY_TIMEOUT)
    port = free_port()
    command = [NICO_API, "serve", "--port", str(port)]
    with (
        serving(command, env, tmp_path / "server.log", port, preexec_fn=soft_file_limit) as url,
        slow_bodies(port, token) as slow,
    ):
        started = time.monotonic()
        assert get_task(url, token, timeout=60).status_code == 200
        assert time.monotonic() - started < HELD_BODY_TIMEOUT
        all_timed_out(slow)


def soft_file_limit() -> None:
    """In the server's process: a soft limit of FILE_LIMIT open files under a hard one of 4,096
    (or the hard limit it has, if lower)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILE_LIMIT, min(4096, hard)))
