"""The real server made wrong in the ways `nico-api conformance --contract` must tell apart: a
reworded message, a check made before the ones production makes first (a task read's id, a
rack power request's body), and production's own answer where this server deliberately
differs (a row of docs/differences.md)."""

from __future__ import annotations

import json
import re
from typing import Any

from nico_api.handlers.checks import as_uuid
from nico_api.web.app import create_app
from nico_api.wire.errors import envelope_body

Scope = dict[str, Any]
TASK_READ = re.compile(r"/v2/org/[^/]+/nico/task/(?P<id>[^/]+)")
RACK_POWER = re.compile(r"/v2/org/[^/]+/nico/rack/[^/]+/power")
REWORDED = {"Site specified in request does not exist": "Site does not exist"}


def app() -> Any:
    inner = create_app()

    async def wrong(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return
        read = TASK_READ.fullmatch(scope.get("path", ""))
        if read and scope["method"] == "GET" and as_uuid(read["id"]) is None:
            # The task id checked before the caller's membership and role.
            await _answer(send, 400, "Invalid Task ID specified in URL")
            return
        if RACK_POWER.fullmatch(scope.get("path", "")) and scope["method"] == "PATCH":
            body, receive = await _read_body(receive)
            try:
                json.loads(body)
            except ValueError:
                # A rack's power request read before the caller's membership and role.
                await _answer(send, 400, "Failed to parse request data")
                return
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def rewrite(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            status, body = start["status"], b"".join(chunks)
            found = json.loads(body) if body.startswith(b"{") else {}
            if found.get("message") in REWORDED:
                body = envelope_body(REWORDED[found["message"]], found["data"]).encode()
            elif read and found.get("message") == "Task not found":
                # What production answers for a task id that names no task.
                status, body = 500, envelope_body("sql: no rows in result set").encode()
            await _send(send, status, body)

        await inner(scope, receive, rewrite)

    return wrong


async def _read_body(receive: Any) -> tuple[bytes, Any]:
    """The request's body, and a receive that hands it on again."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = b"".join(chunks)
    replayed = False

    async def again() -> dict[str, Any]:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return body, again


async def _answer(send: Any, status: int, message: str) -> None:
    await _send(send, status, envelope_body(message).encode())


async def _send(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
