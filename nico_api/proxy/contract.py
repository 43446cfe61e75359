"""What one exchange broke: the request against its operation in openapi.yaml (the client's
side), and the answer against the operation's declared responses and the NICo rules one
exchange can decide (the server's side).

A violation names what was seen, never a token or a body: a parameter's value, a status, a
header's value, or where in a body a schema failed and by which keyword.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl

import yaml
from connexion.json_schema import resolve_refs
from jsonschema.exceptions import ValidationError

from nico_api.proxy.schemas import SchemaCheck
from nico_api.web.validation import bound_body, go_value

Side = Literal["client", "server"]
CLIENT: Side = "client"
SERVER: Side = "server"
# The label of an exchange whose path and method name no operation of the spec.
NO_OPERATION = "(no operation)"
# A value seen is cut to this many characters.
SEEN_CHARS = 80
# Schema failures reported per body: the first few say enough.
ERRORS_PER_BODY = 3
# What the server reads as no page or no page size (PageNumber's and PageSize's 0 and default).
FIRST_PAGE = 1
DEFAULT_PAGE_SIZE = 20
TASK_READS = frozenset({"get-task", "get-rack-task"})
TASK_CANCELS = frozenset({"cancel-task", "cancel-rack-task"})
ENVELOPE_SOURCE = "nico"


@dataclass(frozen=True)
class Violation:
    operation: str
    side: Side
    rule: str
    seen: str

    def as_dict(self) -> dict[str, str]:
        return {
            "operation": self.operation,
            "side": self.side,
            "rule": self.rule,
            "seen": self.seen,
        }


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str
    template: str
    parameters: tuple[dict[str, Any], ...]
    request_body: dict[str, Any] | None
    responses: Mapping[str, dict[str, Any]]
    secured: bool


@dataclass(frozen=True)
class Sent:
    """A request as the client sent it; header names in lower case; `body` is None when it was
    too large to read."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes | None


@dataclass(frozen=True)
class Answered:
    """An answer as the target sent it; `body` is None when it was not read to the end."""

    status: int
    headers: Mapping[str, str]
    body: bytes | None


@dataclass
class Checked:
    """A request matched to its operation (or to none), with what the client broke."""

    operation: Operation | None
    path_params: dict[str, str]
    query: dict[str, list[str]]
    violations: list[Violation] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.operation.operation_id if self.operation else NO_OPERATION

    @property
    def template(self) -> str:
        return self.operation.template if self.operation else "(no route)"


_PARAMETER = re.compile(r"\{([^}/]+)\}")
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "upgrade"})


class Contract:
    """openapi.yaml's operations, and the checks of an exchange against them."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        resolved = resolve_refs(spec)
        secured_by_default = bool(resolved.get("security"))
        routes: list[tuple[int, re.Pattern[str], dict[str, Operation]]] = []
        for template, item in resolved["paths"].items():
            shared = item.get("parameters", [])
            by_method = {}
            for method, operation in item.items():
                if not isinstance(operation, dict) or "operationId" not in operation:
                    continue
                by_method[method.upper()] = Operation(
                    operation_id=operation["operationId"],
                    method=method.upper(),
                    template=template,
                    parameters=tuple(_merged(shared, operation.get("parameters", []))),
                    request_body=operation.get("requestBody"),
                    responses=operation.get("responses", {}),
                    secured=bool(operation.get("security", secured_by_default)),
                )
            pattern = _route_pattern(template)
            literal = len([part for part in template.split("/") if part and "{" not in part])
            routes.append((literal, re.compile(pattern), by_method))
        # Literal segments first: /rack/power before /rack/{id}/...
        routes.sort(key=lambda route: -route[0])
        self._routes = [(pattern, by_method) for _, pattern, by_method in routes]
        self._envelope = SchemaCheck(resolved["components"]["schemas"]["NICoAPIError"], answer=True)
        self._checks: dict[tuple[int, bool], tuple[dict[str, Any], SchemaCheck]] = {}

    @classmethod
    def from_path(cls, path: Path) -> Contract:
        return cls(yaml.safe_load(path.read_bytes()))

    def operations(self) -> list[str]:
        return sorted(op.operation_id for _, ops in self._routes for op in ops.values())

    # The client's side.

    def check_request(self, sent: Sent) -> Checked:
        query: dict[str, list[str]] = {}
        for name, value in parse_qsl(sent.query, keep_blank_values=True):
            query.setdefault(name, []).append(value)
        for pattern, by_method in self._routes:
            match = pattern.fullmatch(sent.path)
            if match is None:
                continue
            operation = by_method.get(sent.method)
            checked = Checked(operation, match.groupdict(), query)
            if operation is None:
                checked.violations.append(
                    Violation(NO_OPERATION, CLIENT, "method-undeclared", f"{sent.method} here")
                )
                return checked
            checked.violations += self._request_violations(operation, checked, sent)
            return checked
        checked = Checked(None, {}, query)
        seen = _cut(f"{sent.method} {sent.path}")
        checked.violations.append(Violation(NO_OPERATION, CLIENT, "path-undeclared", seen))
        return checked

    def _request_violations(
        self, operation: Operation, checked: Checked, sent: Sent
    ) -> Iterable[Violation]:
        label = operation.operation_id

        def client(rule: str, seen: str) -> Violation:
            return Violation(label, CLIENT, rule, seen)

        authorization = sent.headers.get("authorization", "")
        if operation.secured and authorization[:7].lower() != "bearer ":
            yield client("token-missing", "no Authorization: Bearer header")
        declared_query = set()
        for parameter in operation.parameters:
            where, name = parameter["in"], parameter["name"]
            if where == "query":
                declared_query.add(name)
                values = checked.query.get(name)
                value = values[0] if values else None
            elif where == "path":
                value = checked.path_params.get(name)
            elif where == "header":
                value = sent.headers.get(name.lower())
            else:
                continue
            if value is None:
                if parameter.get("required"):
                    yield client("parameter-missing", f"{where} {name}")
                continue
            schema = parameter.get("schema", {})
            try:
                # Query values are read as the server's Go binder reads them.
                read = go_value(value, schema.get("type")) if where == "query" else value
            except ValueError:
                yield client("parameter-invalid", f"{name}={_cut(value)!r}: not a {schema['type']}")
                continue
            error = next(self.schema_check(schema, answer=False).iter_errors(read), None)
            if error is not None:
                yield client("parameter-invalid", f"{name}={_cut(value)!r}: {_keyword(error)}")
        for name in sorted(set(checked.query) - declared_query):
            yield client("parameter-undeclared", f"query {_cut(name)}")
        yield from self._body_violations(operation, sent, client)

    def _body_violations(
        self, operation: Operation, sent: Sent, client: Any
    ) -> Iterable[Violation]:
        declared = operation.request_body
        if declared is None or sent.body is None:
            return
        if not sent.body:
            if declared.get("required"):
                yield client("body-missing", "no body")
            return
        media = _media_type(sent.headers.get("content-type"))
        content = declared.get("content", {})
        if media not in content:
            yield client("body-media-type", media or "no Content-Type")
            return
        if not _json_media(media):
            return
        try:
            value = json.loads(sent.body)
        except (ValueError, UnicodeDecodeError):
            yield client("body-not-json", f"{len(sent.body)} bytes")
            return
        schema = content[media].get("schema", {})
        # The body as the server binds it: nulls as absent values, keys in any case.
        value = _keys_as_declared(bound_body(value), schema)
        for error in _first_errors(self.schema_check(schema, answer=False), value):
            yield client("body-schema", _described(error))

    # The server's side.

    def check_answer(self, checked: Checked, answered: Answered) -> list[Violation]:
        label = checked.label
        found: list[Violation] = []

        def server(rule: str, seen: str) -> None:
            found.append(Violation(label, SERVER, rule, seen))

        media = _media_type(answered.headers.get("content-type"))
        value: Any = None
        readable = answered.body is not None and _json_media(media)
        if readable:
            try:
                value = json.loads(answered.body or b"")
            except (ValueError, UnicodeDecodeError):
                readable = False
                server("body-not-json", f"{answered.status} {media}")
        if answered.status >= 400 and answered.body is not None:
            self._envelope_rules(answered.status, media, value, readable, server)
        operation = checked.operation
        if operation is None:
            return found
        status = str(answered.status)
        declared = (
            operation.responses.get(status)
            or operation.responses.get(f"{status[0]}XX")
            or operation.responses.get("default")
        )
        if declared is None:
            server("status-undeclared", status)
            return found
        for name, header in declared.get("headers", {}).items():
            text = answered.headers.get(name.lower())
            if text is None:
                # NICo's lists always tell their page.
                if header.get("required") or name == "X-Pagination":
                    server("header-missing", name)
                continue
            schema = header.get("schema", {})
            try:
                read = go_value(text, schema.get("type"))
            except ValueError:
                server("header-invalid", f"{name}: {_cut(text)!r}")
                continue
            error = next(self.schema_check(schema, answer=True).iter_errors(read), None)
            if error is not None:
                server("header-invalid", f"{name}: {_cut(text)!r}: {_keyword(error)}")
        content = declared.get("content")
        if content and answered.body is not None:
            if media not in content:
                server("media-type", f"{status} {media or 'no Content-Type'}")
            elif readable and answered.status < 400:
                schema = content[media].get("schema", {})
                validator = self.schema_check(schema, answer=True)
                for error in _first_errors(validator, value):
                    server("body-schema", _described(error))
        if readable and answered.status < 300:
            self._nico_rules(checked, answered, value, server)
        return found

    def _envelope_rules(
        self, status: int, media: str, value: Any, readable: bool, server: Any
    ) -> None:
        """Every NICo error answers with the envelope, its source `nico`."""
        if not readable:
            server("error-envelope", f"{status} {media or 'no Content-Type'}")
            return
        if isinstance(value, dict) and "source" in value and value["source"] != ENVELOPE_SOURCE:
            server("error-source", f"{status} source {_cut(repr(value['source']))}")
        errors = [
            error
            for error in _first_errors(self._envelope, value)
            if list(error.absolute_path) != ["source"]
        ]
        for error in errors:
            server("error-envelope", f"{status} {_described(error)}")

    def _nico_rules(self, checked: Checked, answered: Answered, value: Any, server: Any) -> None:
        operation = checked.operation
        assert operation is not None
        if operation.operation_id in TASK_READS and isinstance(value, dict):
            asked, got = checked.path_params.get("id", ""), value.get("id")
            if isinstance(got, str) and not _same_uuid(asked, got):
                server("task-id", f"{_cut(got)} for {_cut(asked)}")
        cancel = operation.operation_id in TASK_CANCELS and isinstance(value, dict)
        if cancel and value.get("status") != "Terminated":
            server("cancel-status", _cut(repr(value.get("status"))))
        page = answered.headers.get("x-pagination")
        if page is not None and isinstance(value, list):
            for rule, seen in _paging_problems(page, len(value), checked.query):
                server(rule, seen)

    def schema_check(self, schema: dict[str, Any], answer: bool) -> SchemaCheck:
        """One check per schema of the resolved spec and side (each lives as long as the spec)."""
        cached = self._checks.get((id(schema), answer))
        if cached is None or cached[0] is not schema:
            cached = self._checks[(id(schema), answer)] = (schema, SchemaCheck(schema, answer))
        return cached[1]


def _route_pattern(template: str) -> str:
    """A path template as a pattern: each `{name}` one segment."""
    parts = _PARAMETER.split(template)
    # split() alternates literal text and parameter names.
    return "".join(
        f"(?P<{part}>[^/]+)" if odd else re.escape(part) for odd, part in _alternating(parts)
    )


def _alternating(parts: list[str]) -> Iterable[tuple[bool, str]]:
    return ((index % 2 == 1, part) for index, part in enumerate(parts))


def hop_by_hop(name: str) -> bool:
    """A header that describes one connection, not the message: never forwarded."""
    return name.lower() in _HOP_BY_HOP or name.lower().startswith("proxy-")


def _paging_problems(
    header: str, on_page: int, query: Mapping[str, list[str]]
) -> Iterable[tuple[str, str]]:
    """X-Pagination agrees with the request and with the page it describes."""
    try:
        page = json.loads(header)
    except ValueError:
        page = None
    fields = ("pageNumber", "pageSize", "total")
    if not isinstance(page, dict) or not all(_whole(page.get(name)) for name in fields):
        yield "pagination-header", _cut(header)
        return
    number, size, total = (page[name] for name in fields)
    for name, asked in (
        ("pageNumber", _asked(query, "pageNumber", FIRST_PAGE)),
        ("pageSize", _asked(query, "pageSize", DEFAULT_PAGE_SIZE)),
    ):
        if asked is not None and page[name] != asked:
            yield "pagination-page", f"{name} {page[name]} for {asked} asked"
    if page.get("orderBy") is not None:
        yield "pagination-order", f"orderBy {_cut(repr(page['orderBy']))}"
    expected = max(0, min(size, total - (number - 1) * size))
    if on_page != expected:
        yield (
            "pagination-total",
            f"total {total}, page {number} of size {size} holds {on_page} tasks, not {expected}",
        )


def _asked(query: Mapping[str, list[str]], name: str, default: int) -> int | None:
    """The page or size the request asked for, as the server reads it; None if unreadable."""
    values = query.get(name)
    if not values:
        return default
    try:
        value = go_value(values[0], "integer")
    except ValueError:
        return None
    return value or default


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _merged(shared: list[dict[str, Any]], own: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An operation's parameters: its own, then the path item's it does not override."""
    names = {(p["in"], p["name"]) for p in own}
    return own + [p for p in shared if (p["in"], p["name"]) not in names]


def _keys_as_declared(value: Any, schema: Mapping[str, Any]) -> Any:
    """An object's keys under the names the schema declares, as Go's decoder matches them
    (case-insensitively), at every depth with declared properties."""
    properties = schema.get("properties")
    if not isinstance(value, dict) or not properties:
        return value
    names = {name.casefold(): name for name in properties}
    renamed = {}
    for key, item in value.items():
        name = key if key in properties else names.get(key.casefold(), key)
        renamed[name] = _keys_as_declared(item, properties.get(name, {}))
    return renamed


def _first_errors(validator: SchemaCheck, value: Any) -> list[ValidationError]:
    errors = sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    return errors[:ERRORS_PER_BODY]


def _described(error: ValidationError) -> str:
    """Where a body failed and by which keyword, never the value itself."""
    where = "/" + "/".join(str(part) for part in error.absolute_path)
    if error.validator in ("required", "additionalProperties"):
        # Name properties (the schema's words or the keys sent), not values.
        return f"{where}: {error.message}"
    if error.validator == "type":
        return f"{where}: {_json_type(error.instance)}, not {error.validator_value}"
    return f"{where}: {_keyword(error)}"


def _keyword(error: ValidationError) -> str:
    if error.validator == "format":
        return f"not a {error.validator_value}"
    if error.validator == "enum":
        return f"not one of {_cut(json.dumps(error.validator_value))}"
    if error.validator == "type":
        return f"{_json_type(error.instance)}, not {error.validator_value}"
    if error.validator in ("anyOf", "oneOf"):
        return f"matches none of its {len(error.validator_value)} forms"
    return f"fails {error.validator} {_cut(json.dumps(error.validator_value, default=str))}"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def _json_media(media: str) -> bool:
    return media == "application/json" or media.endswith("+json")


def _same_uuid(a: str, b: str) -> bool:
    try:
        return uuid.UUID(a) == uuid.UUID(b)
    except ValueError:
        return a == b


def _cut(text: str) -> str:
    return text if len(text) <= SEEN_CHARS else text[: SEEN_CHARS - 1] + "…"
