"""Request validation against openapi.yaml, answered as production answers.

Connexion validates every request against the spec before the handler runs, but production
makes some of the same checks later: the site list checks membership and role before its query
parameters, every list checks paging only after the Site, and cancel reads its body only after
the org's provider and the task id. So the validators here do not answer a failure at once:
they keep production's error in the request's `problems`, and each handler raises it when its
check list reaches the step where production makes that check (`RequestProblems.check`).
Values are read as Go's binder reads them (first of repeated keys, `strconv.ParseBool` and
`strconv.ParseInt` forms, an empty value as the zero value), and a value that cannot be read is
left out of the handler's arguments, so that the handler sees the spec's default meanwhile.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from typing import Any, ClassVar

from connexion.lifecycle import ConnexionRequest
from connexion.middleware.request_validation import (
    RequestValidationAPI,
    RequestValidationMiddleware,
    RequestValidationOperation,
)
from connexion.uri_parsing import OpenAPIURIParser
from connexion.validators import JSONRequestBodyValidator, ParameterValidator
from connexion.validators.parameter import draft4_format_checker
from jsonschema import Draft4Validator
from jsonschema.exceptions import ValidationError, best_match
from starlette.datastructures import Headers, QueryParams
from starlette.types import Message, Receive, Scope, Send

from nico_api.errors import NICoError

PROBLEMS = "problems"
PARSE_FAILED = "Failed to parse request data"
PAGING_PARSE_FAILED = "Failed to parse request pagination data"
PAGING_INVALID = "Failed to validate pagination request data"
# The paging parameters, by the Go field that production's validation errors name.
PAGING_FIELDS = {"pageNumber": "PageNumber", "pageSize": "PageSize", "orderBy": "OrderByStr"}
# Production's paging messages, by the JSON Schema keyword that fails.
_PAGING_MESSAGES = {
    "minimum": lambda bound: "must be greater than 0",
    "maximum": lambda bound: f"must be less than or equal to: {bound}",
    "pattern": lambda bound: "must be in the format of field_ASC or field_DESC",
}
_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
_GO_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_INT64 = 2**63


class Step(StrEnum):
    """The steps of production's check lists that read the request itself."""

    QUERY = "query"  # unknown keys, values that cannot be read, a missing required value
    PAGING = "paging"  # pageNumber, pageSize and orderBy, read and validated
    BODY = "body"  # the body read, then validated


class RequestProblems:
    """What validation found wrong with a request, held for the step that reports it."""

    def __init__(self) -> None:
        self._found: dict[Step, NICoError] = {}

    @classmethod
    def of(cls, scope: Scope) -> RequestProblems:
        # The request context reaches the handler as its `problems` argument.
        context = ConnexionRequest(scope).context
        problems = context.get(PROBLEMS)
        if problems is None:
            problems = context[PROBLEMS] = cls()
        return problems

    def add(self, step: Step, error: NICoError) -> None:
        # The first problem of a step is the one production reports.
        self._found.setdefault(step, error)

    def check(self, step: Step) -> None:
        error = self._found.get(step)
        if error is not None:
            raise error


def go_value(text: str, kind: str | None) -> Any:
    """A query value as Go's binder reads it into a field of that JSON Schema type."""
    if kind == "boolean":
        if text in _GO_TRUE or text in _GO_FALSE:
            return text in _GO_TRUE
        if text == "":
            return False
        raise ValueError(f"not a boolean: {text!r}")
    if kind == "integer":
        if text == "":
            return 0
        if not _GO_INT.fullmatch(text) or not -_INT64 <= int(text) < _INT64:
            raise ValueError(f"not a 64-bit integer: {text!r}")
        return int(text)
    return text


class GoURIParser(OpenAPIURIParser):
    """Query values as production reads them; one that cannot be read is left out."""

    def resolve_params(self, params: dict[str, Any], _in: str) -> dict[str, Any]:
        if _in != "query":
            return super().resolve_params(params, _in)
        resolved = {}
        for name, values in params.items():
            schema = self.param_schemas.get(name)
            if schema is None:
                # Unknown keys are the validator's to report; the handler never sees them.
                continue
            try:
                # Echo binds the first of repeated keys.
                resolved[name] = go_value(values[0], schema.get("type"))
            except ValueError:
                continue
        return resolved


class NICoParameterValidator(ParameterValidator):
    """The spec's parameter checks, kept as production's errors for the handler's check list."""

    # Each parameter's JSON Schema validator, built once rather than on every request.
    _validators: ClassVar[dict[int, tuple[dict[str, Any], Draft4Validator]]] = {}

    def validate(self, scope: Scope) -> None:
        raw: dict[str, str] = {}
        for name, text in QueryParams(scope.get("query_string", b"")).multi_items():
            raw.setdefault(name, text)  # Echo binds the first of repeated keys
        self._check_query(RequestProblems.of(scope), raw)
        # Path and header parameters are read by the router as they are: checked at once.
        request = ConnexionRequest(scope, uri_parser=self.uri_parser)
        for param in self.parameters.get("path", []):
            if message := self.validate_path_parameter(param, request):
                raise NICoError(400, message)
        for param in self.parameters.get("header", []):
            if message := self.validate_header_parameter(param, request):
                raise NICoError(400, message)

    def _check_query(self, problems: RequestProblems, raw: dict[str, str]) -> None:
        """Production's order: unknown keys, values that cannot be read, required values; then
        paging, read and validated (every failing field named in `data`)."""
        query = self.parameters.get("query", [])
        known = {param["name"] for param in query}
        for name in raw:
            if name not in known:
                problems.add(
                    Step.QUERY,
                    NICoError(400, f"Unknown query parameter specified in request: {name}"),
                )
                break
        paging: dict[str, str] = {}
        for param in query:
            name = param["name"]
            text = raw.get(name)
            step = Step.PAGING if name in PAGING_FIELDS else Step.QUERY
            if text is None:
                continue
            try:
                value = go_value(text, param["schema"].get("type"))
            except ValueError:
                failed = PAGING_PARSE_FAILED if step is Step.PAGING else PARSE_FAILED
                problems.add(step, NICoError(400, failed))
                continue
            # Go's validation skips a zero value, as an empty or absent one.
            error = None if text == "" else self._first_error(param, value)
            if error is not None and step is Step.PAGING:
                paging[PAGING_FIELDS[name]] = _PAGING_MESSAGES[error.validator](
                    error.validator_value
                )
            elif error is not None:
                problems.add(step, NICoError(400, PARSE_FAILED))
        for param in query:
            if param.get("required") and not raw.get(param["name"]):
                problems.add(
                    Step.QUERY, NICoError(400, f"{param['name']} query parameter is required")
                )
        if paging:
            problems.add(Step.PAGING, NICoError(400, PAGING_INVALID, paging))
        elif "orderBy" in raw and "orderBy" in known:
            # Tasks have no sortable field: production refuses even a well-formed orderBy.
            problems.add(Step.PAGING, NICoError(400, PAGING_INVALID, {}))

    @classmethod
    def _first_error(cls, param: dict[str, Any], value: Any) -> ValidationError | None:
        cached = cls._validators.get(id(param))
        if cached is None or cached[0] is not param:
            validator = Draft4Validator(param["schema"], format_checker=draft4_format_checker)
            cached = cls._validators[id(param)] = (param, validator)
        return best_match(cached[1].iter_errors(value))


class NICoBodyValidator(JSONRequestBodyValidator):
    """A JSON body read as Go's `encoding/json` reads it into the request's struct: a body that
    cannot be read is `Failed to parse request data`; one that misses a required value is the
    operation's own validation message (`check_body`)."""

    async def _parse(self, stream: Any, scope: Scope) -> Any:
        # Parsed, then validated (`_validate`), once per request by this instance.
        self._problems = RequestProblems.of(scope)
        text = b"".join([message async for message in stream])
        try:
            return json.loads(text.decode(self._encoding), parse_constant=_not_json)
        except (ValueError, UnicodeDecodeError, RecursionError):
            self._problems.add(Step.BODY, NICoError(400, PARSE_FAILED))
            # The handler is passed an empty object instead, which it never reads: Connexion
            # would parse the original again, and fail where this did.
            self.MUTABLE_VALIDATION = True
            return {}

    def _validate(self, body: Any) -> None:
        if body is None:
            # JSON null binds nothing, as an empty body; so does a null field.
            body = {}
        if isinstance(body, dict):
            body = {name: value for name, value in body.items() if value is not None}
        errors = list(self._validator.iter_errors(body))
        if any(error.validator == "type" for error in errors):
            self._problems.add(Step.BODY, NICoError(400, PARSE_FAILED))
        required = self._schema.get("required", [])
        if errors or any(body.get(name) == "" for name in required if isinstance(body, dict)):
            # Go's validation reads an empty required value as a missing one.
            self._problems.add(Step.BODY, BodyInvalidError())


def _not_json(constant: str) -> Any:
    # Python reads NaN and Infinity; JSON, and Go's decoder, do not.
    raise ValueError(f"{constant} is not JSON")


class BodyInvalidError(NICoError):
    """A readable body that misses a required value; the operation names the message."""

    def __init__(self) -> None:
        super().__init__(400, "Failed to validate request data", {})


def check_body(problems: RequestProblems, message: str) -> None:
    """The body step of an operation whose validation failure production words as `message`."""
    try:
        problems.check(Step.BODY)
    except BodyInvalidError:
        raise NICoError(400, message, {}) from None


class _ValidationOperation(RequestValidationOperation):
    """Connexion's request validation, with a body read first as production's binder reads it:
    an empty one binds nothing (an empty object is validated instead), a non-empty one must be
    `application/json` (a case-sensitive prefix), else `Failed to parse request data`. What the
    JSON validator is then given is always a JSON body with its length, chunked or not."""

    def validate_mime_type(self, mime_type: str) -> None:
        """Decided in `__call__`, where the problem can be kept for the handler."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._operation.request_body:
            # Read whole: its size is bounded by the edge's body limit.
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if message["type"] != "http.request" or not message.get("more_body"):
                    break
            content_type = Headers(scope=scope).get("content-type", "")
            if body and not content_type.startswith("application/json"):
                RequestProblems.of(scope).add(Step.BODY, NICoError(400, PARSE_FAILED))
                body = b""
            replay = body or b"{}"
            headers = [
                (name, value)
                for name, value in scope["headers"]
                if name not in (b"content-type", b"content-length", b"transfer-encoding")
            ]
            headers += [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(replay)).encode()),
            ]
            scope = {**scope, "headers": headers}
            receive = _replaying(replay, receive)
        await super().__call__(scope, receive, send)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A receive channel that gives `body` once, then whatever the client sends next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class _ValidationAPI(RequestValidationAPI):
    def make_operation(self, operation: Any) -> RequestValidationOperation:
        return _ValidationOperation(
            self.next_app,
            operation=operation,
            strict_validation=self.strict_validation,
            validator_map=self.validator_map,
        )


class NICoRequestValidation(RequestValidationMiddleware):
    """Connexion's request validation middleware, with `_ValidationOperation` per operation."""

    api_cls = _ValidationAPI
