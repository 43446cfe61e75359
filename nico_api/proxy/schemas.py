"""A schema of openapi.yaml checked as the server's Connexion checks it (draft 4, `nullable`,
`writeOnly` refused in answers, the server's formats).

jsonschema describes what failed (the keyword and the place a violation names) but takes about
0.4 ms for a task; jsonschema-rs tells a valid value in about 20 us and describes less. So a value
is first told valid or not by jsonschema-rs, given the same formats, and only one it refuses is
described by jsonschema, whose verdict stands.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import jsonschema_rs
from connexion.json_schema import Draft4RequestValidator, Draft4ResponseValidator
from connexion.validators.parameter import draft4_format_checker
from jsonschema import FormatChecker
from jsonschema.exceptions import ValidationError

# Formats as the server reads them: Connexion's draft 4 formats, and UUIDs in Go's forms.
FORMATS = FormatChecker()
FORMATS.checkers.update(draft4_format_checker.checkers)

_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)", re.ASCII)
# OpenAPI's words that are no JSON Schema keyword, or that the JSON Schema below spells out.
_OPENAPI_ONLY = frozenset(
    {"nullable", "x-nullable", "readOnly", "writeOnly", "x-writeOnly", "discriminator", "xml"}
    | {"example", "externalDocs", "deprecated"}
)


@FORMATS.checks("uuid", raises=ValueError)
def _uuid(value: object) -> bool:
    if isinstance(value, str):
        uuid.UUID(value)
    return True


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    # RFC 3339: a date, a time and an offset (Z or +hh:mm).
    return not isinstance(value, str) or (
        _RFC3339.fullmatch(value) is not None
        and datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00")) is not None
    )


def _conforms(name: str) -> Callable[[str], bool]:
    return lambda value: FORMATS.conforms(value, name)


# The same format checks, for jsonschema-rs (which would otherwise use its own).
_FAST_FORMATS = {name: _conforms(name) for name in FORMATS.checkers}


class SchemaCheck:
    """One schema of the resolved spec, for a request (`answer` False) or an answer."""

    def __init__(self, schema: dict[str, Any], answer: bool) -> None:
        kind = Draft4ResponseValidator if answer else Draft4RequestValidator
        self._described = kind(schema, format_checker=FORMATS)
        self.fast: jsonschema_rs.Draft4Validator | None = None
        if not _judged_alike(schema):
            return
        try:
            self.fast = jsonschema_rs.Draft4Validator(
                json_schema(schema, answer), formats=_FAST_FORMATS, validate_formats=True
            )
        except ValueError:
            self.fast = None  # a schema it cannot compile is jsonschema's alone

    def iter_errors(self, value: Any) -> Iterator[ValidationError]:
        if self.fast is not None:
            try:
                if self.fast.is_valid(value):
                    return iter(())
            except (ValueError, TypeError, OverflowError):
                pass  # a value it cannot read (NaN, say): jsonschema decides
        return self._described.iter_errors(value)


def _judged_alike(schema: Any) -> bool:
    """Whether jsonschema-rs judges values against `schema` as jsonschema does: not with
    `multipleOf` (it divides exactly, Python's floats do not) nor with a pattern that has a
    backslash (`\\s` and its kin name other characters in Rust's regular expressions)."""
    if isinstance(schema, list):
        return all(_judged_alike(item) for item in schema)
    if not isinstance(schema, dict):
        return True
    if "multipleOf" in schema or "\\" in str(schema.get("pattern", "")):
        return False
    patterns = schema.get("patternProperties")
    if isinstance(patterns, dict) and any("\\" in key for key in patterns):
        return False
    return all(
        _judged_alike(value)
        for key, value in schema.items()
        if key not in ("enum", "const", "default", "example", "required")
    )


def json_schema(schema: Any, answer: bool) -> Any:
    """An OpenAPI 3.0 schema as the draft 4 JSON Schema Connexion's validators make of it:
    `nullable` lets null through `type` and `enum`, and in an answer any `writeOnly` schema
    fails."""
    if isinstance(schema, list):
        return [json_schema(item, answer) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if answer and ("writeOnly" in schema or "x-writeOnly" in schema):
        return {"not": {}}
    converted: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _OPENAPI_ONLY:
            continue
        if key in ("properties", "patternProperties", "definitions"):
            # Maps of names to schemas: the names are data, not keywords.
            converted[key] = {name: json_schema(item, answer) for name, item in value.items()}
        elif key in ("enum", "const", "default", "required"):
            converted[key] = value
        else:
            converted[key] = json_schema(value, answer)
    if schema.get("nullable") or schema.get("x-nullable") is True:
        if "type" in converted:
            types = converted["type"]
            converted["type"] = [*types, "null"] if isinstance(types, list) else [types, "null"]
        if "enum" in converted:
            converted["enum"] = [*converted["enum"], None]
    return converted
