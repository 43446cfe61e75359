"""Request validation against openapi.yaml, answered as production answers.

Connexion validates every request against the spec before the handler runs, but production
makes some of the same checks later: the site list checks membership and role before its query
parameters, every list checks paging only after the Site, and cancel reads its body only after
the org's provider and the task id. So validation does not answer a failure at once: it
keeps production's error in the request's `problems`, and each handler raises it when its
check list reaches the step where production makes that check (`RequestProblems.check`).
Values are read as Go's binder reads them (first of repeated keys, `strconv.ParseBool` and
`strconv.ParseInt` forms, an empty value as the zero value), and a value that cannot be read is
left out of the handler's arguments, so that the handler sees the spec's default meanwhile.

This module holds production's rules; the Connexion validators that apply them to each request
are in `nico_api.web.framework`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

from jsonschema.exceptions import ValidationError

from nico_api.config import spec_document
from nico_api.wire.errors import NICoError

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


def read_query(params: Mapping[str, list[str]], schemas: Mapping[str, dict[str, Any]]) -> dict:
    """The query values a handler is given: the first of repeated keys, as Go reads it into a
    field of the parameter's type; unknown keys and values that cannot be read are left out."""
    resolved = {}
    for name, values in params.items():
        schema = schemas.get(name)
        if schema is None:
            continue
        try:
            resolved[name] = go_value(values[0], schema.get("type"))
        except ValueError:
            continue
    return resolved


def check_query(
    query: list[dict[str, Any]],
    raw: Mapping[str, str],
    problems: RequestProblems,
    first_error: Callable[[dict[str, Any], Any], ValidationError | None],
    body_bound: bool = True,
) -> None:
    """Production's order: unknown keys, values that cannot be read (then a body that cannot
    be: `body_bound` false), required values; then paging, read and validated (every failing
    field named in `data`). `raw` holds the first value of each key; `first_error` is the
    spec's verdict on a parameter's value."""
    known = {param["name"] for param in query}
    for name in raw:
        if name not in known:
            problems.add(
                Step.QUERY, NICoError(400, f"Unknown query parameter specified in request: {name}")
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
        error = None if text == "" else first_error(param, value)
        if error is not None and step is Step.PAGING:
            paging[PAGING_FIELDS[name]] = _PAGING_MESSAGES[error.validator](error.validator_value)
        elif error is not None:
            problems.add(step, NICoError(400, PARSE_FAILED))
    if not body_bound:
        problems.add(Step.QUERY, NICoError(400, PARSE_FAILED))
    for param in query:
        if param.get("required") and not raw.get(param["name"]):
            problems.add(Step.QUERY, NICoError(400, f"{param['name']} query parameter is required"))
    if paging:
        problems.add(Step.PAGING, NICoError(400, PAGING_INVALID, paging))
    elif "orderBy" in raw and "orderBy" in known:
        # Tasks have no sortable field: production refuses even a well-formed orderBy.
        problems.add(Step.PAGING, NICoError(400, PAGING_INVALID, {}))


UNREADABLE = object()


def json_typed(content_type: str) -> bool:
    """Whether a body of this type is read as JSON (a case-sensitive prefix, as Echo's)."""
    return content_type.startswith("application/json")


FORM_TYPE = "application/x-www-form-urlencoded"
_FORM_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def form_typed(content_type: str) -> bool:
    """Whether a body of this type is read as a form (a case-sensitive prefix, as Echo's)."""
    return content_type.startswith(FORM_TYPE)


def form_readable(body: bytes) -> bool:
    """Whether Go's `url.ParseQuery` reads a form body: no `;` separator, no broken escape.
    What it reads binds no field (production's request types have no `form` tags)."""
    return b";" not in body and _FORM_ESCAPE.search(body) is None


def binds(body: bytes, content_type: str) -> bool:
    """Whether Go's binder reads a body sent with a GET into the handler's request struct:
    none at all, or one JSON value that is an object or null (JSON alone, as for a body)."""
    if not body or form_typed(content_type):
        # Go's ParseForm reads no body of a GET.
        return True
    value = _json_value(body) if json_typed(content_type) else UNREADABLE
    return value is None or isinstance(value, dict)


def parse_body(text: bytes, encoding: str, problems: RequestProblems) -> Any:
    """A JSON body as Go's `encoding/json` reads it; one it cannot read is kept as the body
    step's problem, and read as `UNREADABLE`."""
    body = _json_value(text, encoding)
    if body is UNREADABLE:
        problems.add(Step.BODY, NICoError(400, PARSE_FAILED))
    return body


_DECODER = json.JSONDecoder(parse_constant=lambda constant: _not_json(constant))
_LEADING_SPACE = re.compile(r"[ \t\n\r]*")


def _json_value(text: bytes, encoding: str = "utf-8") -> Any:
    """The first JSON value of the text as Go's `json.Decoder` reads it, or `UNREADABLE`: bytes
    after the value are never read, and bytes that are not UTF-8 read as U+FFFD."""
    try:
        decoded = text.decode(encoding, errors="replace")
        return _DECODER.raw_decode(decoded, _LEADING_SPACE.match(decoded).end())[0]  # type: ignore[union-attr]
    except (ValueError, LookupError, RecursionError):
        return UNREADABLE


def bound_body(body: Any) -> Any:
    """What Go binds of a JSON body into the request's struct: null as an empty body, a null
    field (at any depth) as an absent one, a null in a list of strings as "", a lone surrogate
    in text as U+FFFD, and each key as the field it names, matched as Go matches it."""
    if body is None:
        return {}
    return _bound(body, _body_fields())


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# Go's name folding maps these two non-ASCII letters onto ASCII ones (unicode.SimpleFold).
_GO_FOLDS = str.maketrans({"\u017f": "S", "\u212a": "K"})

# A struct's fields by their folded name: each field's name and its own fields (None: an object
# read by its own exact-name reader, or not an object).
Fields = dict[str, tuple[str, "Fields | None"]]


def _go_fold(name: str) -> str:
    """A key folded as Go folds it to match a field: ASCII letters in upper case."""
    return "".join(c.upper() if c.isascii() else c for c in name.translate(_GO_FOLDS))


def _bound(value: Any, fields: Fields | None) -> Any:
    if isinstance(value, dict):
        bound: dict[str, Any] = {}
        for name, item in value.items():
            if item is None:
                continue
            field = None if fields is None else fields.get(_go_fold(name))
            if field is None:
                bound[name] = _bound(item, None)
                continue
            # Keys matching one field, in any case: the last one read is the one bound.
            bound.pop(field[0], None)
            bound[field[0]] = _bound(item, field[1])
        return bound
    if isinstance(value, list):
        return ["" if item is None else _bound(item, fields) for item in value]
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    return value


@functools.cache
def _packaged_spec() -> dict[str, Any]:
    """openapi.yaml, read once: the `$ref`s below point into it (never to be changed)."""
    return spec_document()


def _resolved(schema: dict[str, Any]) -> dict[str, Any]:
    """A schema of openapi.yaml with its `$ref`s followed."""
    while "$ref" in schema:
        node: Any = _packaged_spec()
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


# At most this many unknown filter keys are named, each cut to this length: a log line's size
# stays bounded whatever the body.
_UNKNOWN_KEYS_NAMED = 10
_UNKNOWN_KEY_CHARS = 64


def unknown_filter_keys(body: Any, schema: dict[str, Any]) -> list[str]:
    """The keys of a bound batch body's `filter` that its schema does not name: Go's decoder
    ignores them, so they narrow nothing (sorted, at most a few, each cut short)."""
    wanted = body.get("filter") if isinstance(body, dict) else None
    declared = _resolved(schema).get("properties", {}).get("filter")
    if not isinstance(wanted, dict) or declared is None:
        return []
    known = _resolved(declared).get("properties", {})
    unknown = sorted(key for key in wanted if key not in known)
    return [key[:_UNKNOWN_KEY_CHARS] for key in unknown[:_UNKNOWN_KEYS_NAMED]]


@functools.cache
def _body_fields() -> Fields:
    """The fields of every request body in openapi.yaml, nested objects' fields under theirs.
    An object that refuses unknown properties is read by names exactly, as production's own
    reader of it does (its `UnmarshalJSON`), so none of its keys is folded."""
    resolved = _resolved

    def merge(fields: Fields, schema: dict[str, Any]) -> None:
        schema = resolved(schema)
        for name, property_schema in (schema.get("properties") or {}).items():
            inner = resolved(property_schema)
            inner = resolved(inner.get("items", inner)) if inner.get("type") == "array" else inner
            nested = None
            if "properties" in inner and inner.get("additionalProperties") is not False:
                nested = fields.get(_go_fold(name), (name, None))[1] or {}
                merge(nested, inner)
            fields[_go_fold(name)] = (name, nested)

    fields: Fields = {}
    for operations in _packaged_spec()["paths"].values():
        for operation in operations.values():
            body = operation.get("requestBody") if isinstance(operation, dict) else None
            for content in (body or {}).get("content", {}).values():
                merge(fields, content["schema"])
    return fields


def keep_body_problems(
    body: Any, errors: list[ValidationError], required: list[str], problems: RequestProblems
) -> None:
    """The spec's verdict on a bound body (`errors`), kept as production's problem: a value of
    the wrong type cannot be read; any other failure, or an empty required value (which Go's
    validation reads as a missing one), is the operation's validation message. An object that
    refuses unknown fields is read by its own reader, whose error stops the reading: it comes
    before any other."""
    closed = [error for error in errors if error.validator == "additionalProperties"]
    if closed:
        problems.add(Step.BODY, _unknown_fields(min(closed, key=lambda e: len(e.absolute_path))))
    if any(_unreadable(error) for error in errors):
        problems.add(Step.BODY, NICoError(400, PARSE_FAILED))
    if errors or any(body.get(name) == "" for name in required if isinstance(body, dict)):
        problems.add(Step.BODY, BodyInvalidError())


def _unknown_fields(error: ValidationError) -> NICoError:
    """Production's error for a closed object's unknown fields, named in sorted order."""
    where = ".".join(str(part) for part in error.absolute_path)
    known = set(error.schema.get("properties") or ())
    unknown = sorted(set(error.instance) - known)
    if len(unknown) == 1:
        return NICoError(400, f'{where} contains unknown field "{unknown[0]}"')
    names = ", ".join(f'"{name}"' for name in unknown)
    return NICoError(400, f"{where} contains unknown fields: {names}")


def _unreadable(error: ValidationError) -> bool:
    """A value Go cannot read into its field: of the wrong type, for every type it may have."""
    if error.validator in ("anyOf", "oneOf"):
        branches: dict[Any, list[ValidationError]] = {}
        for failure in error.context or ():
            branches.setdefault(failure.relative_schema_path[0], []).append(failure)
        return bool(branches) and all(
            any(_unreadable(failure) for failure in failures) for failures in branches.values()
        )
    return error.validator == "type"


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


def check_body_read(problems: RequestProblems) -> None:
    """The body step of an operation that validates its body by production's own rules
    (nico_api.wire.submissions): only a body that cannot be read is answered here."""
    with contextlib.suppress(BodyInvalidError):
        problems.check(Step.BODY)
