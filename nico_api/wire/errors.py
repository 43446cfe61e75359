"""The NICo error envelope, and the handlers that put every error into it."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException

from nico_api.storage.errors import StorageDeadlineError
from nico_api.vocabulary import Code, FlowError

if TYPE_CHECKING:
    from connexion import AsyncApp
    from connexion.exceptions import ProblemException
    from connexion.lifecycle import ConnexionRequest, ConnexionResponse

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
STORAGE_UNAVAILABLE = "Task storage is temporarily unavailable"
INTERNAL_ERROR = "Internal server error"


class NICoError(Exception):
    """An answer of the contract that is not a success: a status and the production message."""

    def __init__(
        self,
        status: int,
        message: str,
        data: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        # Connexion's security layer picks the most specific error by this attribute.
        self.status_code = status
        self.message = message
        self.data = data
        self.headers = headers or {}


# The status a REST client gets for Flow's answer, by its code, as production's REST layer maps
# Flow's gRPC codes (its UnwrapWorkflowError); any other code, Unknown and Internal included, is
# a 500. Flow's text is the message, unchanged.
FLOW_STATUSES = {
    Code.NOT_FOUND: 404,
    Code.FAILED_PRECONDITION: 412,
    Code.INVALID_ARGUMENT: 400,
    Code.RESOURCE_EXHAUSTED: 429,
}


def flow_status(code: Code) -> int:
    return FLOW_STATUSES.get(code, 500)


def envelope_body(message: str, data: dict[str, Any] | None = None) -> str:
    """The envelope as Go's encoder writes it: compact, one line, `data` (a Go map: ozzo
    validation's field errors) with its keys in sorted order at every depth."""
    envelope = {"source": "nico", "message": message, "data": _go_map(data)}
    return json.dumps(envelope, separators=(",", ":")) + "\n"


def _go_map(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _go_map(value[key]) for key in sorted(value)}
    return value


def envelope(
    status: int,
    message: str,
    data: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> ConnexionResponse:
    # Connexion is loaded by the app that installs these handlers; storage and the command
    # line use this module's errors without it.
    from connexion.lifecycle import ConnexionResponse

    body = envelope_body(message, data)
    return ConnexionResponse(
        status_code=status,
        mimetype="application/json",
        content_type="application/json",
        body=body,
        headers=headers or {},
    )


async def _nico_error(_request: ConnexionRequest, exc: NICoError) -> ConnexionResponse:
    return envelope(exc.status_code, exc.message, exc.data, exc.headers)


async def _flow_error(_request: ConnexionRequest, exc: FlowError) -> ConnexionResponse:
    return envelope(flow_status(exc.code), exc.message)


async def _problem(request: ConnexionRequest, exc: ProblemException) -> ConnexionResponse:
    if exc.status >= 500:
        # A response that breaks the spec, or another server fault: the detail is internal.
        return await _unexpected(request, exc)
    # Connexion's client errors (request validation, security) carry the useful text in detail.
    return envelope(exc.status, str(exc.detail or exc.title), headers=dict(exc.headers or {}))


async def _http_error(_request: ConnexionRequest, exc: HTTPException) -> ConnexionResponse:
    return envelope(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))


async def _undecodable(_request: ConnexionRequest, _exc: UnicodeDecodeError) -> ConnexionResponse:
    # Connexion decodes a JSON body as UTF-8 before validating it.
    return envelope(400, "Request body is not valid UTF-8")


async def _storage_error(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    log.error("storage error on %s %s: %r", request.method, request.url.path, exc)
    return envelope(503, STORAGE_UNAVAILABLE, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


async def _unexpected(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return envelope(500, INTERNAL_ERROR)


def install(app: AsyncApp) -> None:
    """Route every kind of error the app can raise into the envelope. The handlers are
    coroutines: Connexion awaits those on the event loop, and runs others in a worker thread."""
    from connexion.exceptions import ProblemException

    app.add_error_handler(NICoError, _nico_error)
    app.add_error_handler(FlowError, _flow_error)
    app.add_error_handler(ProblemException, _problem)
    app.add_error_handler(HTTPException, _http_error)
    app.add_error_handler(UnicodeDecodeError, _undecodable)
    # Unreachable, dropped, timed-out or exhausted storage: the client may retry.
    # The request path's asynchronous reads raise psycopg's own.
    for storage_error in (
        OperationalError,
        InterfaceError,
        PoolTimeoutError,
        StorageDeadlineError,
        psycopg.OperationalError,
        psycopg.InterfaceError,
    ):
        app.add_error_handler(storage_error, _storage_error)
    app.add_error_handler(Exception, _unexpected)
