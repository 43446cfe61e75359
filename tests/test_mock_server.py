"""Prism, a mock server consumers run from openapi.yaml, mocks every operation as it is: each
request made from the spec's own examples gets the documented success, with no violation."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from nico_api.config import SPEC_PATH
from tests.openapi import SPEC, operations, resolved
from tests.processes import free_port, serving

pytestmark = pytest.mark.slow

# Pinned, as the Makefile pins Redocly and Spectral.
PRISM = "@stoplight/prism-cli@5.16.0"


def first_example(node: dict[str, Any]) -> Any:
    if "example" in node:
        return node["example"]
    if "examples" in node:
        return resolved(next(iter(node["examples"].values())))["value"]
    return node["schema"]["example"]


def request_from_examples(path: str, operation: dict[str, Any]) -> dict[str, Any]:
    """The request the spec's examples make: path, required query, body, a bearer token."""
    query = {}
    for parameter in map(resolved, operation.get("parameters", [])):
        if parameter["in"] == "path":
            path = path.replace(f"{{{parameter['name']}}}", str(first_example(parameter)))
        elif parameter["in"] == "query" and parameter.get("required"):
            query[parameter["name"]] = first_example(parameter)
    request: dict[str, Any] = {"url": path, "params": query, "headers": {}}
    if operation.get("security", SPEC.get("security")):
        request["headers"]["Authorization"] = "Bearer any-token"
    if "requestBody" in operation:
        request["json"] = first_example(
            resolved(operation["requestBody"])["content"]["application/json"]
        )
    return request


@pytest.fixture(scope="module")
def prism(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    npx = shutil.which("npx")
    if npx is None:
        pytest.skip("no npx here: Prism runs on Node.js (Debian package nodejs, with npm)")
    port = free_port()
    command = [npx, "--yes", PRISM, "mock", "--port", str(port), str(SPEC_PATH)]
    log = tmp_path_factory.mktemp("prism") / "prism.log"
    # The first run downloads Prism; npx starts it as a child.
    with serving(command, os.environ, log, port, start_timeout=300, process_group=True) as url:
        yield url


@pytest.mark.parametrize(
    ("path", "method", "operation"),
    list(operations()),
    ids=[operation["operationId"] for _, _, operation in operations()],
)
def test_prism_mocks_the_operation_from_its_examples(
    prism: str, path: str, method: str, operation: dict[str, Any]
) -> None:
    request = request_from_examples(path, operation)
    request["headers"]["Prefer"] = "example=demo"
    response = httpx.request(method, prism + request.pop("url"), timeout=30, **request)
    success = min(status for status in operation["responses"] if status.startswith("2"))
    assert response.status_code == int(success), response.text
    # Prism names any way the request or its own answer departs from the spec.
    assert "sl-violations" not in response.headers, response.headers["sl-violations"]
    # The named example the request asked for, in the first media type, as Microcks pairs it.
    media_type, media = next(iter(resolved(operation["responses"][success])["content"].items()))
    assert response.headers["content-type"].startswith(media_type)
    body = response.json() if media_type == "application/json" else response.text
    assert body == media["examples"]["demo"]["value"]
