"""Logging: one JSON line per request (the access log), and JSON lines for everything else."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("nico_api.access")

REQUEST_ID_HEADER = "X-Request-ID"
# A caller's request id is echoed when it is a plain token; anything else gets a fresh one.
_GOOD_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


class AccessLog:
    """ASGI middleware: tags each response with X-Request-ID, logs the request as JSON, and
    hands its operation, status and duration to `observe` (the metrics), if given."""

    def __init__(
        self,
        app: ASGIApp,
        path_templates: Mapping[str, str],
        operation_of: Callable[[Scope], str | None],
        observe: Callable[[str | None, int, float], None] | None = None,
    ) -> None:
        self.app = app
        self.path_templates = path_templates
        # The operationId routing chose, read from the scope once the request is answered.
        self.operation_of = operation_of
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        # Routing writes the operation into this dict; the router works on a copy of the scope.
        scope.setdefault("extensions", {})
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            operation = self.operation_of(scope)
            seconds = time.perf_counter() - started
            if self.observe is not None:
                self.observe(operation, status, seconds)
            access_log.info(
                "request",
                extra={
                    "fields": {
                        "method": scope["method"],
                        "path": self.path_templates.get(operation, "(no route)"),
                        "operation": operation,
                        "status": status,
                        "duration_ms": round(seconds * 1000, 3),
                        "request_id": request_id,
                    }
                },
            )


def path_templates(spec: Mapping[str, Any]) -> dict[str, str]:
    """Each operationId's path template in the spec, for the access log."""
    return {
        operation["operationId"]: path
        for path, item in spec["paths"].items()
        for operation in item.values()
        if isinstance(operation, dict) and "operationId" in operation
    }


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _GOOD_REQUEST_ID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def config(level: str = "info") -> dict[str, Any]:
    """A logging configuration (for uvicorn's log_config) that writes JSON lines to stderr."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"default": handler},
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False},
            "alembic": {"level": "WARNING"},
        },
    }
