"""openapi.yaml is a valid OpenAPI 3.0 document whose examples match their schemas."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename

from nico_api.config import SPEC_PATH
from tests.openapi import SPEC, operations, resolved

ERROR_STATUSES = {"400", "401", "403", "500", "503"}
TASK_ERROR_STATUSES = ERROR_STATUSES | {"404", "412"}


def test_spec_is_valid_openapi_3_0() -> None:
    spec, _ = read_from_filename(str(SPEC_PATH))
    validate(spec)
    assert SPEC["openapi"] == "3.0.3"


def _media_examples(where: str, media: dict[str, Any]) -> Iterator[tuple[str, dict, Any]]:
    if "example" in media:
        yield where, media["schema"], media["example"]
    for name, example in media.get("examples", {}).items():
        yield f"{where} ({name})", media["schema"], example["value"]


def _examples() -> Iterator[tuple[str, dict[str, Any], Any]]:
    """Every example in the spec, with the schema it illustrates."""
    components = SPEC["components"]
    for path, item in SPEC["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                for media_type, media in response.get("content", {}).items():
                    yield from _media_examples(f"{method} {path} {status} {media_type}", media)
            for media_type, media in operation.get("requestBody", {}).get("content", {}).items():
                yield from _media_examples(f"{method} {path} body {media_type}", media)
    for name, response in components["responses"].items():
        yield from _media_examples(f"responses/{name}", response["content"]["application/json"])
    for name, parameter in components["parameters"].items():
        yield from _media_examples(f"parameters/{name}", parameter)
    for name, header in components["headers"].items():
        yield f"headers/{name}", header["schema"], header["example"]
    for name, schema in components["schemas"].items():
        if "example" in schema:
            yield f"schemas/{name}", schema, schema["example"]


@pytest.mark.parametrize(
    ("where", "schema", "example"), list(_examples()), ids=lambda v: v if isinstance(v, str) else ""
)
def test_example_is_valid_against_its_schema(
    where: str, schema: dict[str, Any], example: Any
) -> None:
    # The spec's components ride along so that "#/components/..." references resolve.
    validator = OAS30Validator({**schema, "components": SPEC["components"]})
    errors = [error.message for error in validator.iter_errors(example)]
    assert not errors, f"{where}: {errors}"


@pytest.mark.parametrize(("path", "method", "operation"), list(operations()))
def test_operation_documents_every_status_with_the_envelope(
    path: str, method: str, operation: dict[str, Any]
) -> None:
    responses = operation["responses"]
    if "/task/" in path:
        assert set(responses) >= TASK_ERROR_STATUSES, path
    elif "/org/" in path:
        assert set(responses) >= ERROR_STATUSES, path
    else:
        assert operation["security"] == [], path
        assert set(responses) >= {"200", "400", "500"}, path
    for status in set(responses) - {"200", "202"}:
        ref = responses[status]["$ref"].split("/")[-1]
        schema = SPEC["components"]["responses"][ref]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/NICoAPIError"}
    if "/org/" in path:
        assert operation.get("security", SPEC["security"]) == [{"JWTBearerToken": []}]
    assert operation["summary"] and operation["description"] and operation["operationId"]


def test_task_schema_says_what_is_always_present() -> None:
    task = SPEC["components"]["schemas"]["Task"]
    assert set(task["required"]) == set(task["properties"]) - {"report"}
    for nullable in ("ruleId", "started", "finished"):
        assert task["properties"][nullable]["nullable"] is True


def test_deprecated_path_is_marked() -> None:
    legacy = SPEC["paths"]["/v2/org/{org}/nico/rack/task/{id}"]["get"]
    assert legacy["deprecated"] is True
    assert (
        legacy["operationId"] != SPEC["paths"]["/v2/org/{org}/nico/task/{id}"]["get"]["operationId"]
    )


def test_every_operation_is_described_and_tagged() -> None:
    tags = {tag["name"] for tag in SPEC["tags"]}
    assert all(tag.get("description") for tag in SPEC["tags"])
    for path, method, operation in operations():
        assert operation.get("operationId"), (path, method)
        assert operation.get("summary"), (path, method)
        assert operation.get("description"), (path, method)
        assert operation.get("tags") and set(operation["tags"]) <= tags, (path, method)


def test_no_unused_components() -> None:
    text = SPEC_PATH.read_text()
    for kind, items in SPEC["components"].items():
        for name in items:
            if kind == "securitySchemes":
                assert any(name in r for r in SPEC["security"]), name
            else:
                assert f"'#/components/{kind}/{name}'" in text, f"{kind}/{name} is never used"


@pytest.mark.parametrize(("path", "method", "operation"), list(operations()))
def test_operation_has_a_named_example_to_mock_from(
    path: str, method: str, operation: dict[str, Any]
) -> None:
    # Microcks pairs a request's parameters and body with a response by example name.
    success = min(status for status in operation["responses"] if status.startswith("2"))
    content = resolved(operation["responses"][success])["content"]
    assert all("demo" in media.get("examples", {}) for media in content.values()), success
    for parameter in map(resolved, operation.get("parameters", [])):
        if parameter["in"] == "path" or parameter.get("required"):
            assert "demo" in parameter.get("examples", {}), parameter["name"]
    if "requestBody" in operation:
        assert "demo" in operation["requestBody"]["content"]["application/json"]["examples"]
