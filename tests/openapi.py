"""openapi.yaml as the tests read it: the document, its operations, its references followed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from nico_api.config import spec_document

SPEC: dict[str, Any] = spec_document()


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Each operation: its path, its method (lower case) and its object."""
    for path, item in SPEC["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def resolved(node: dict[str, Any]) -> dict[str, Any]:
    """The node a `$ref` points at (followed through chains), or the node itself."""
    while "$ref" in node:
        target: Any = SPEC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node
