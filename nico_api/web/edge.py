"""The HTTP edge: bounds on what a client can make the server read or wait for, each refusal
answered in the NICo envelope.

A request's head (request line and headers) is bounded by uvicorn's settings (`server_options`,
read by the protocol it serves with, web/protocol.py); its body by `BodyGuard`, an ASGI
middleware: in size, and in time."""

from __future__ import annotations

import asyncio
import resource
from typing import Any

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nico_api.config import Settings
from nico_api.web.protocol import BoundedHeadProtocol
from nico_api.wire.errors import envelope_body

BODY_TOO_LARGE = "Request Entity Too Large"
BODY_TOO_SLOW = "Request Timeout"
# uvicorn's httptools protocol, its head bounded as uvicorn bounds h11's.
HTTP_IMPLEMENTATION = BoundedHeadProtocol
# asyncio's own loop: out of file descriptors, it leaves new connections waiting in the listen
# backlog until some are free; uvloop (libuv) accepts and drops them.
EVENT_LOOP = "asyncio"


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's settings for the edge: a head over `max_header_bytes` is refused (uvicorn's
    400, the connection closed), an idle kept-alive connection is closed, and clients that come
    while the process is out of file descriptors wait rather than being dropped."""
    return {
        "http": HTTP_IMPLEMENTATION,
        "loop": EVENT_LOOP,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "timeout_keep_alive": settings.keepalive_timeout,
    }


def open_every_file_allowed() -> int:
    """Raise this process's soft limit on open files to its hard limit, as Go's runtime does at
    start for production's server: each connection holds one. The limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass  # a hard limit the kernel will not grant (unlimited): keep the soft one
    return soft


class BodyGuard:
    """ASGI middleware bounding a request's body: over `max_bytes` it is 413, by its declared
    length before any of it is read, or as soon as a body of undeclared length passes the limit;
    not complete within `timeout` seconds of the head, it is 408. An answer that starts before
    the body was read to its end closes the connection (`Connection: close`), so that the server
    never waits for the rest of a body it has already answered (a 401, 403 or 413 included)."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if declared in ("", "0") and "transfer-encoding" not in headers:
            # No body follows the head (most requests, every task GET): nothing to bound.
            await self.app(scope, receive, send)
            return
        if declared.isdigit() and int(declared) > self.max_bytes:
            # Outside the error handlers: refused before the app sees the request.
            await _refusal(413, BODY_TOO_LARGE)(scope, receive, send)
            return
        body = _Body(receive, self.max_bytes, asyncio.get_running_loop().time() + self.timeout)

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not body.complete:
                message = {**message, "headers": [*message.get("headers", ()), _CLOSE]}
            await send(message)

        await self.app(scope, body.receive, closing_send)


class _Body:
    """One request's body as the app receives it, counted and bounded by a deadline."""

    def __init__(self, receive: Receive, max_bytes: int, deadline: float) -> None:
        self.source = receive
        self.max_bytes = max_bytes
        self.deadline = deadline
        self.received = 0
        self.complete = False

    async def receive(self) -> Message:
        if self.complete:
            # The body is read: what follows is the wait for a disconnect, with no deadline.
            return await self.source()
        try:
            async with asyncio.timeout_at(self.deadline):
                message = await self.source()
        except TimeoutError:
            raise HTTPException(408, BODY_TOO_SLOW) from None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.max_bytes:
                raise HTTPException(413, BODY_TOO_LARGE)
            self.complete = not message.get("more_body", False)
        return message


_CLOSE = (b"connection", b"close")


def _refusal(status: int, message: str) -> Response:
    return Response(
        envelope_body(message),
        status_code=status,
        media_type="application/json",
        headers={"Connection": "close"},
    )
