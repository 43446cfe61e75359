"""The server's HTTP protocol (nico_api/web/protocol.py) driven read by read over a transport in
memory, with an app that answers when told: the order of answers to pipelined requests, and
which requests h11 is handed. tests/test_edge.py tests the same over real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from nico_api.web.protocol import INVALID_REQUEST, BoundedHeadProtocol

HEAD_LIMIT = 1024


class MemoryTransport(asyncio.Transport):
    """A connection's server end: what the server writes, and whether it closed it."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = asyncio.Event()
        self.protocol: asyncio.BaseProtocol | None = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed.set()

    def is_closing(self) -> bool:
        return self.closed.is_set()

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def read(self, data: bytes) -> None:
        """The client's bytes, as one read."""
        protocol = self.get_protocol()
        assert isinstance(protocol, asyncio.Protocol)
        protocol.data_received(data)


class HeldApp:
    """Answers `<method> <path>` with 200; a request for /held once `release` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/held":
            await self.release.wait()
        body = f"{scope['method']} {scope['path']}".encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def connection(app: HeldApp) -> MemoryTransport:
    config = uvicorn.Config(
        app, h11_max_incomplete_event_size=HEAD_LIMIT, log_level="critical", lifespan="off"
    )
    config.load()
    protocol = BoundedHeadProtocol(config, ServerState(), {})
    transport = MemoryTransport()
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    return transport


async def until(condition: Callable[[], bool]) -> None:
    """Once `condition` holds, the event loop having run what it had to (within 5 s)."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0)

    await asyncio.wait_for(poll(), 5)


def request(method: str, path: str) -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def bodies(written: bytes) -> list[bytes]:
    """The bodies of the answers written, in order."""
    return [answer.partition(b"\r\n\r\n")[2] for answer in written.split(b"HTTP/1.1 ")[1:]]


def test_an_unknown_method_sent_before_the_answer_ahead_of_it_is_refused_after_that_answer() -> (
    None
):
    async def scenario() -> None:
        app = HeldApp()
        transport = connection(app)
        protocol = transport.protocol
        transport.read(request("GET", "/held"))
        transport.read(request("FETCH", "/f"))
        assert transport.protocol is protocol  # not handed to h11 ahead of the held answer
        await asyncio.sleep(0)
        assert not transport.written
        app.release.set()
        await asyncio.wait_for(transport.closed.wait(), 5)
        assert bodies(bytes(transport.written)) == [b"GET /held", INVALID_REQUEST.encode()]

    asyncio.run(scenario())


def test_an_unknown_method_after_the_answers_is_read_by_h11_blank_lines_skipped() -> None:
    async def scenario() -> None:
        app = HeldApp()
        transport = connection(app)
        transport.read(request("GET", "/a"))
        await until(lambda: b"GET /a" in transport.written)
        transport.read(b"\r\n" + request("FETCH", "/f"))
        assert isinstance(transport.protocol, H11Protocol)
        await until(lambda: b"FETCH /f" in transport.written)
        assert bodies(bytes(transport.written)) == [b"GET /a", b"FETCH /f"]
        assert not transport.closed.is_set()

    asyncio.run(scenario())


def test_a_head_read_a_byte_at_a_time_is_refused_past_the_limit() -> None:
    async def scenario() -> None:
        transport = connection(HeldApp())
        head = b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * HEAD_LIMIT
        sent = 0
        while not transport.closed.is_set():
            transport.read(head[sent : sent + 1])
            sent += 1
        assert sent == HEAD_LIMIT + 1
        assert bodies(bytes(transport.written)) == [INVALID_REQUEST.encode()]

    asyncio.run(scenario())
