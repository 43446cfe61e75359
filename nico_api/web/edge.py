"""The HTTP edge: bounds on what a client can make the server read or wait for (a request's
head and body, idle and slow connections), each refusal answered in the NICo envelope."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from nico_api.config import Settings
from nico_api.wire.errors import envelope_body

BODY_TOO_LARGE = "Request Entity Too Large"
HEAD_TOO_LARGE = "Request Header Fields Too Large"
BAD_REQUEST = "Invalid HTTP request received"
LINGER_SECONDS = 2.0


class BodyLimit:
    """ASGI middleware: a body over `max_bytes` is refused with 413, by its declared length
    before any of it is read, or as soon as a body of undeclared length passes the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise HTTPException(413, BODY_TOO_LARGE)
        received = 0

        async def bounded() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, BODY_TOO_LARGE)
            return message

        await self.app(scope, bounded, send)


@functools.cache
def _limits() -> Settings:
    # uvicorn builds its protocol objects itself, with no app at hand: a serving process's
    # limits are read once, from the environment `nico-api serve` and its workers share.
    return Settings.from_env()


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a request's head (request line and headers) bounded
    in size and in time: a connection that sends no complete head within the header timeout,
    idle from the start or dripping bytes, is closed; a head over the limit is 431. Protocol
    errors are answered in the envelope instead of plain text."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_head = _limits().max_header_bytes
        self._head_timeout = _limits().header_timeout
        self._head_bytes = 0
        self._in_head = True
        self._head_deadline: asyncio.TimerHandle | None = None
        self._refusal: tuple[int, str] | None = None
        self._discarding = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        super().data_received(data)
        # What arrived while the head is still incomplete was all head: counted as it arrives,
        # since the parser reports a header only once the next one starts.
        if self._in_head and not self._discarding:
            self._head_bytes += len(data)
            if self._head_bytes > self._max_head:
                self._refusal = (431, HEAD_TOO_LARGE)
                self.send_400_response(HEAD_TOO_LARGE)

    def send_400_response(self, msg: str) -> None:
        status, message = self._refusal or (400, BAD_REQUEST)
        body = envelope_body(message).encode()
        reason = {400: b"Bad Request", 431: HEAD_TOO_LARGE.encode()}[status]
        if self.cycle is not None and not self.cycle.response_complete:
            # An earlier request still being answered on this connection is abandoned.
            self.cycle.disconnected = True
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, reason, len(body), body)
        )
        # A lingering close: what the client still sends is read and dropped for a moment, so
        # that closing with unread data (a reset) does not destroy the answer on its way.
        self._discarding = True
        self._disarm()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _arm(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self._head_timeout, self._head_too_slow)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()
