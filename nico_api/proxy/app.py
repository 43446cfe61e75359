"""The proxy as an ASGI app: each request forwarded to the target as the client sent it, the
target's answer sent back as it came, with `X-Contract-Violations` added when the exchange broke
the contract; each violation logged as one JSON line, and counted in the tally.

The violations header must precede the body, so an answer is read (up to CHECKED_ANSWER_BYTES)
before it is passed on; a longer one is passed on as it arrives, its body unchecked.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp
from starlette.types import Message, Receive, Scope, Send
from yarl import URL

from nico_api.proxy.contract import (
    CLIENT,
    Answered,
    Checked,
    Contract,
    Sent,
    Violation,
    hop_by_hop,
)
from nico_api.proxy.tally import Tally
from nico_api.wire.errors import envelope_body

log = logging.getLogger("nico_api.proxy")

VIOLATIONS_HEADER = b"x-contract-violations"
# Violations named in the header; the log and the summary have them all.
VIOLATIONS_IN_HEADER = 10
# Answers longer than this are passed on unchecked (a task list of 100 with reports is far less).
CHECKED_ANSWER_BYTES = 16 << 20
TOO_LARGE = "Request Entity Too Large"
UNREACHABLE = "Bad Gateway: the target did not answer"
NOT_FORWARDABLE = "Bad Request: the path, query and headers are forwarded as UTF-8 only"


class ContractProxy:
    def __init__(
        self,
        target: str,
        contract: Contract,
        tally: Tally,
        max_body_bytes: int,
        timeout: float = 60.0,
        max_head_bytes: int = 64 << 10,
    ) -> None:
        self.target = target.rstrip("/")
        self.contract = contract
        self.tally = tally
        self.max_body_bytes = max_body_bytes
        self.timeout = timeout
        self.max_head_bytes = max_head_bytes
        self.host = urlsplit(self.target).netloc.rpartition("@")[2]
        self.client: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._exchange(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.client = _forwarding_client(self.timeout, self.max_head_bytes)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.client is not None:
                    await self.client.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _exchange(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.client is not None, "the proxy serves once its lifespan has started"
        headers = [(name, value) for name, value in scope["headers"]]
        named = {name.decode("latin-1"): value.decode("latin-1") for name, value in headers}
        body = await self._body(receive, named.get("content-length"))
        sends_body = "content-length" in named or "transfer-encoding" in named
        sent = Sent(
            scope["method"],
            scope["path"],
            scope["query_string"].decode("latin-1"),
            named,
            body,
        )
        checked = self.contract.check_request(sent)
        if body is None:
            checked.violations.append(
                Violation(checked.label, CLIENT, "body-too-large", f"over {self.max_body_bytes}")
            )
            await self._refuse(checked, scope, send, 413, TOO_LARGE)
            return
        raw_path = scope.get("raw_path") or scope["path"].encode()
        query = b"?" + scope["query_string"] if scope["query_string"] else b""
        texts = [_as_sent(raw_path + query)] + [
            _as_sent(part)
            for name, value in headers
            if not hop_by_hop(name.decode("latin-1")) and name not in (b"host", b"content-length")
            for part in (name, value)
        ]
        if None in texts:
            # aiohttp writes text as UTF-8: other bytes would reach the target changed.
            checked.violations.append(
                Violation(checked.label, CLIENT, "not-forwardable", "bytes that are not UTF-8")
            )
            await self._refuse(checked, scope, send, 400, NOT_FORWARDABLE)
            return
        url = self.target + str(texts[0])
        forwarded = list(zip(texts[1::2], texts[2::2], strict=True))
        # The target's own name: a virtual host (a staging gateway) routes by it.
        forwarded.insert(0, ("Host", self.host))
        started = False

        async def answer(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            # The path and query as the client encoded them: never normalised on the way.
            async with self.client.request(
                scope["method"],
                URL(url, encoded=True),
                headers=forwarded,
                data=body if sends_body else None,
                allow_redirects=False,
            ) as response:
                await self._answer(checked, scope, response, answer)
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Unreachable, or its answer broken off: the client gets the envelope if it can.
            log.error(
                "target unreachable",
                extra={
                    "fields": {
                        "target": self.target,
                        "operation": checked.label,
                        "error": f"{type(exc).__name__}: {exc}",
                    }
                },
            )
            if not started:
                await self._refuse(checked, scope, send, 502, UNREACHABLE, {"target": self.target})

    async def _answer(
        self, checked: Checked, scope: Scope, response: aiohttp.ClientResponse, send: Send
    ) -> None:
        chunks: list[bytes] = []
        read = 0
        raw = response.content.iter_any()
        complete = True
        async for chunk in raw:
            chunks.append(chunk)
            read += len(chunk)
            if read > CHECKED_ANSWER_BYTES:
                complete = False
                break
        body = b"".join(chunks)
        decoded = _decoded(body, response.headers.get("content-encoding")) if complete else None
        answered = Answered(response.status, response.headers, decoded)
        violations = checked.violations + self.contract.check_answer(checked, answered)
        if not complete:
            log.info(
                "answer not checked",
                extra={"fields": {"operation": checked.label, "over_bytes": CHECKED_ANSWER_BYTES}},
            )
        headers = [
            (name, value)
            for name, value in response.raw_headers
            if not hop_by_hop(name.decode("latin-1"))
        ]
        if violations:
            headers.append((VIOLATIONS_HEADER, _header_value(violations)))
        self._record(checked, scope, response.status, violations)
        start = {"type": "http.response.start", "status": response.status, "headers": headers}
        await send(start)
        if complete:
            await send({"type": "http.response.body", "body": body})
            return
        await send({"type": "http.response.body", "body": body, "more_body": True})
        async for chunk in raw:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def _body(self, receive: Receive, declared_length: str | None) -> bytes | None:
        """The request's body, or None when it is larger than the server takes (refused by its
        declared length unread, as the server refuses it, or once it has grown past it)."""
        declared = declared_length or ""
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in _chunks(receive):
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def _refuse(
        self,
        checked: Checked,
        scope: Scope,
        send: Send,
        status: int,
        message: str,
        data: dict[str, str] | None = None,
    ) -> None:
        """The proxy's own answer, in the envelope, naming what the client broke."""
        self._record(checked, scope, status, checked.violations)
        body = envelope_body(message, data).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if checked.violations:
            headers.append((VIOLATIONS_HEADER, _header_value(checked.violations)))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _record(self, checked: Checked, scope: Scope, status: int, found: list[Violation]) -> None:
        self.tally.record(checked.label, found)
        for violation in found:
            log.warning(
                "contract violation",
                extra={
                    "fields": {
                        **violation.as_dict(),
                        "method": scope["method"],
                        "path": checked.template,
                        "status": status,
                    }
                },
            )


def _forwarding_client(timeout: float, max_head_bytes: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
        # Each step (resolving and connecting, each read) waits at most `timeout`; a long
        # answer may go on.
        timeout=aiohttp.ClientTimeout(
            total=None, connect=timeout, sock_connect=timeout, sock_read=timeout
        ),
        # An answer's head is taken up to the server's own head limit, whatever its lines.
        max_line_size=max_head_bytes,
        max_field_size=max_head_bytes,
        max_headers=max_head_bytes // 4,
        # Forwarded as sent: none of the client library's own headers, no cookie kept between
        # clients, the content coding passed on as it came, no proxy from the environment.
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        trust_env=False,
    )


def _as_sent(raw: bytes) -> str | None:
    """Bytes as the text aiohttp writes back as the same bytes (UTF-8), or None."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


async def _chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


def _header_value(violations: list[Violation]) -> bytes:
    shown = [violation.as_dict() for violation in violations[:VIOLATIONS_IN_HEADER]]
    # ASCII JSON on one line: a header value.
    return json.dumps(shown, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _decoded(body: bytes, encoding: str | None) -> bytes | None:
    """The body to check, its content coding undone; None when it cannot be."""
    coding = (encoding or "identity").strip().lower()
    try:
        if coding == "identity":
            return body
        if coding in ("gzip", "x-gzip"):
            return _inflated(body, 16 + zlib.MAX_WBITS)
        if coding == "deflate":
            return _inflated(body, zlib.MAX_WBITS)
    except zlib.error:
        return None
    return None


def _inflated(body: bytes, wbits: int) -> bytes | None:
    """The body decompressed, or None past CHECKED_ANSWER_BYTES: a small answer that inflates
    to gigabytes is passed on unchecked, never held whole."""
    inflater = zlib.decompressobj(wbits)
    inflated = inflater.decompress(body, CHECKED_ANSWER_BYTES)
    return None if inflater.unconsumed_tail else inflated
