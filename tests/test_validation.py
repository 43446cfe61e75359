"""The request validation customisations: Go's reading of query values, and every handler
raising what validation found."""

from __future__ import annotations

import inspect

import pytest

from nico_api.config import spec_document
from nico_api.web.framework import PROBLEMS, handler_for
from nico_api.web.validation import go_value


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("1", "boolean", True),
        ("t", "boolean", True),
        ("TRUE", "boolean", True),
        ("True", "boolean", True),
        ("F", "boolean", False),
        ("false", "boolean", False),
        ("", "boolean", False),
        ("+7", "integer", 7),
        ("-3", "integer", -3),
        ("007", "integer", 7),
        ("", "integer", 0),
        ("9223372036854775807", "integer", 2**63 - 1),
        (" x ", "string", " x "),
    ],
)
def test_values_read_as_go_reads_them(text: str, kind: str, value: object) -> None:
    assert go_value(text, kind) == value


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("yes", "boolean"),
        ("tRUE", "boolean"),
        ("1.5", "integer"),
        (" 5", "integer"),
        ("1_000", "integer"),
        ("٣", "integer"),  # a digit Python's int() reads and Go's does not
        ("9223372036854775808", "integer"),
    ],
)
def test_values_go_cannot_read(text: str, kind: str) -> None:
    with pytest.raises(ValueError):
        go_value(text, kind)


def test_every_handler_raises_what_validation_found() -> None:
    # A handler without `problems` would never answer its request's validation failures.
    spec = spec_document()
    for item in spec["paths"].values():
        for operation in item.values():
            handler = handler_for(operation["operationId"])
            assert PROBLEMS in inspect.signature(handler).parameters, operation["operationId"]
