"""Prism, a mock server consumers run from openapi.yaml, mocks every operation as it is: each
request made from the spec's own examples gets the documented success, with no violation."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from nico_api.config import SPEC_PATH
from tests.processes import free_port

pytestmark = pytest.mark.slow

# Pinned, as the Makefile pins Redocly and Spectral.
PRISM = "@stoplight/prism-cli@5.16.0"
SPEC = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
METHODS = ("get", "post", "patch", "put", "delete")


def resolved(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = SPEC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def first_example(node: dict[str, Any]) -> Any:
    if "example" in node:
        return node["example"]
    if "examples" in node:
        return resolved(next(iter(node["examples"].values())))["value"]
    return node["schema"]["example"]


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in SPEC["paths"].items():
        for method in METHODS:
            if method in item:
                yield method.upper(), path, item[method]


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
    log = tmp_path_factory.mktemp("prism") / "prism.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [npx, "--yes", PRISM, "mock", "--port", str(port), str(SPEC_PATH)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        # The first run downloads Prism.
        deadline = time.monotonic() + 300
        while True:
            try:
                httpx.get(base_url + "/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "Prism did not start"
                time.sleep(0.5)
        yield base_url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)


@pytest.mark.parametrize(
    ("method", "path", "operation"),
    list(operations()),
    ids=[operation["operationId"] for _, _, operation in operations()],
)
def test_prism_mocks_the_operation_from_its_examples(
    prism: str, method: str, path: str, operation: dict[str, Any]
) -> None:
    request = request_from_examples(path, operation)
    response = httpx.request(method, prism + request.pop("url"), timeout=30, **request)
    success = min(status for status in operation["responses"] if status.startswith("2"))
    assert response.status_code == int(success), response.text
    # Prism names any way the request or its own answer departs from the spec.
    assert "sl-violations" not in response.headers, response.headers["sl-violations"]
    assert response.headers["content-type"].startswith("application/json")
