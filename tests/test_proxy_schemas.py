"""The proxy's quick schema check agrees with Connexion's validators on every schema of
openapi.yaml: a value jsonschema-rs lets through is one Connexion's jsonschema validators let
through, for the spec's own examples and for each of them broken one way at a time."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import pytest
from connexion.json_schema import Draft4RequestValidator, Draft4ResponseValidator, resolve_refs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nico_api.config import spec_document
from nico_api.proxy.schemas import FORMATS, SchemaCheck, json_schema

RESOLVED = resolve_refs(spec_document())


def _schemas(node: Any) -> Iterator[dict[str, Any]]:
    """Every schema the proxy checks against: parameters', bodies' and headers'."""
    if isinstance(node, dict):
        if isinstance(node.get("schema"), dict):
            yield node["schema"]
        for value in node.values():
            yield from _schemas(value)
    elif isinstance(node, list):
        for value in node:
            yield from _schemas(value)


def _examples(node: Any) -> Iterator[tuple[dict[str, Any], Any]]:
    """(schema, value) for each example the spec gives next to a schema or in one."""
    if isinstance(node, dict):
        schema = node.get("schema")
        if isinstance(schema, dict):
            for example in node.get("examples", {}).values():
                if isinstance(example, dict) and "value" in example:
                    yield schema, example["value"]
            if "example" in node:
                yield schema, node["example"]
        if "example" in node and "type" in node:
            yield node, node["example"]
        for value in node.values():
            yield from _examples(value)
    elif isinstance(node, list):
        for value in node:
            yield from _examples(value)


SCHEMAS = list({id(schema): schema for schema in _schemas(RESOLVED["paths"])}.values())
# Each example once, whatever the number of places the resolved spec repeats it in.
EXAMPLES = list(
    {(id(schema), repr(value)): (schema, value) for schema, value in _examples(RESOLVED)}.values()
)
_BY_ID: dict[int, dict[str, Any]] = {}
ODD_VALUES: list[Any] = [None, True, 0, 1.0, -1, 2**70, "", "x", "not-a-uuid", [], {}, [None]]


def _broken(value: Any) -> Iterator[Any]:
    """The value, then each way of breaking one of its parts: a key dropped, replaced by an odd
    value or added; an item replaced."""
    yield value
    if isinstance(value, dict):
        yield {**value, "unknownKey": 1}
        for key, item in value.items():
            yield {k: v for k, v in value.items() if k != key}
            for odd in ODD_VALUES:
                yield {**value, key: odd}
            for broken in _broken(item):
                yield {**value, key: broken}
    elif isinstance(value, list) and value:
        for odd in ODD_VALUES:
            yield [odd, *value[1:]]
        for broken in _broken(value[0]):
            yield [broken, *value[1:]]
    else:
        yield from ODD_VALUES


@functools.cache
def _checks(key: int, answer: bool) -> tuple[Any, SchemaCheck]:
    schema = _BY_ID[key]
    kind = Draft4ResponseValidator if answer else Draft4RequestValidator
    return kind(schema, format_checker=FORMATS), SchemaCheck(schema, answer)


def _agree(schema: dict[str, Any], value: Any, answer: bool) -> None:
    _BY_ID.setdefault(id(schema), schema)
    reference, quick = _checks(id(schema), answer)
    # Exactly: a quick check stricter than the reference would send valid answers the slow way.
    assert quick.fast is not None, schema
    assert quick.fast.is_valid(value) == reference.is_valid(value), (schema, value)
    assert (not any(quick.iter_errors(value))) == reference.is_valid(value), (schema, value)


def test_the_spec_has_schemas_and_examples_to_compare() -> None:
    assert len(SCHEMAS) >= 30
    assert len(EXAMPLES) >= 20


@pytest.mark.parametrize("answer", [False, True], ids=["request", "answer"])
@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_each_example_broken_one_way_at_a_time_is_judged_alike(index: int, answer: bool) -> None:
    schema, example = EXAMPLES[index]
    for value in _broken(example):
        _agree(schema, value, answer)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


@settings(derandomize=True, max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SCHEMAS), _JSON, st.booleans())
def test_any_json_value_is_judged_alike_against_any_schema(
    schema: dict[str, Any], value: Any, answer: bool
) -> None:
    _agree(schema, value, answer)


@pytest.mark.parametrize(
    ("schema", "value", "valid"),
    [
        ({"type": "string", "nullable": True}, None, True),
        ({"type": "string"}, None, False),
        ({"enum": ["a"], "nullable": True}, None, True),
        ({"type": "object", "properties": {"secret": {"writeOnly": True}}}, {"secret": 1}, False),
        ({"type": "string", "format": "uuid"}, "5518AE9848F447C1B4D37B3747FA4D0C", True),
        ({"type": "string", "format": "date-time"}, "2026-11-02 09:00:05Z", False),
    ],
)
def test_openapis_words_are_read_as_connexion_reads_them(
    schema: dict[str, Any], value: Any, valid: bool
) -> None:
    assert any(SchemaCheck(schema, answer=True).iter_errors(value)) is not valid
    _agree(schema, value, answer=True)


def test_nullable_and_write_only_become_json_schema() -> None:
    assert json_schema({"type": "string", "nullable": True}, answer=False) == {
        "type": ["string", "null"]
    }
    assert json_schema({"writeOnly": True}, answer=True) == {"not": {}}
    assert json_schema({"writeOnly": True}, answer=False) == {}
    # Names of properties are data, even when one is a keyword's name.
    properties = {"properties": {"nullable": {"type": "boolean"}}}
    assert json_schema(properties, answer=False) == properties


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        ({"type": "number", "multipleOf": 0.01}, 0.07),
        ({"type": "string", "pattern": "^\\s*$"}, "\ufeff"),
        ({"type": "object", "patternProperties": {"^\\d+$": {"type": "integer"}}}, {"٣": "x"}),
    ],
)
def test_schemas_jsonschema_rs_reads_otherwise_are_left_to_jsonschema(
    schema: dict[str, Any], value: Any
) -> None:
    check = SchemaCheck(schema, answer=True)
    assert check.fast is None
    reference = Draft4ResponseValidator(schema, format_checker=FORMATS)
    assert (not any(check.iter_errors(value))) == reference.is_valid(value)
