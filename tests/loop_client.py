"""An HTTP client that serves each request by running the ASGI app on an event loop of the
test's own thread: Starlette's TestClient runs the app on a second thread and crosses over to
it several times a request (about 2.5 ms); this crosses nothing. The app's lifespan runs for as
long as the client is open, and work it leaves running goes on whenever the next request runs."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

import httpx
from starlette.types import ASGIApp, Message

BASE_URL = "http://testserver"


class _LoopTransport(httpx.BaseTransport):
    def __init__(self, app: ASGIApp, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.loop = loop

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": request.url.scheme,
            "path": httpx.URL(request.url.raw_path.split(b"?")[0].decode("ascii")).path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "root_path": "",
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "client": ("testclient", 50000),
            "server": (request.url.host, request.url.port or 80),
            "extensions": {"http.response.debug": {}},
            "state": {},
        }
        status, headers, body = self.loop.run_until_complete(self._serve(scope, request.read()))
        return httpx.Response(status, headers=headers, content=body, request=request)

    async def _serve(self, scope: dict[str, Any], body: bytes) -> tuple[int, list, bytes]:
        sent = False
        started: Message = {}
        chunks: list[bytes] = []

        async def receive() -> Message:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()  # the client stays connected until answered
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        assert started, "the app sent no answer"
        return started["status"], list(started.get("headers", [])), b"".join(chunks)


class LoopClient(httpx.Client):
    """`with LoopClient(app) as client`: the app started (its lifespan), then served."""

    def __init__(self, app: ASGIApp) -> None:
        self.loop = asyncio.new_event_loop()
        self.app = app
        # The lifespan's messages to the app and back, and the app running it.
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message] = asyncio.Queue()
        self._lifespan: asyncio.Task[None] | None = None
        super().__init__(transport=_LoopTransport(app, self.loop), base_url=BASE_URL)

    def __enter__(self) -> LoopClient:
        self.loop.run_until_complete(self._start())
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None = None,
        error: BaseException | None = None,
        trace: TracebackType | None = None,
    ) -> None:
        try:
            self.loop.run_until_complete(self._stop())
        finally:
            self.loop.close()
            super().__exit__(kind, error, trace)

    async def _start(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._lifespan = asyncio.ensure_future(self.app(scope, self._inbox.get, self._outbox.put))
        await self._inbox.put({"type": "lifespan.startup"})
        answer = asyncio.ensure_future(self._outbox.get())
        await asyncio.wait({answer, self._lifespan}, return_when=asyncio.FIRST_COMPLETED)
        if not answer.done():
            answer.cancel()
            self._lifespan.result()  # the app's own error, if it raised one
            raise AssertionError("the app's lifespan ended without starting")
        assert answer.result()["type"] == "lifespan.startup.complete", answer.result()

    async def _stop(self) -> None:
        assert self._lifespan is not None
        await self._inbox.put({"type": "lifespan.shutdown"})
        message = await self._outbox.get()
        assert message["type"] == "lifespan.shutdown.complete", message
        await self._lifespan
        pending = asyncio.all_tasks(self.loop) - {asyncio.current_task()}
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
