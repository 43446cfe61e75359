"""The OpenAPI document, as the server validates against it."""

from __future__ import annotations

from nico_api.config import SPEC_PATH
from nico_api.validation import RequestProblems, Step

_DOCUMENT = SPEC_PATH.read_bytes()


def get_openapi(problems: RequestProblems) -> tuple[bytes, int, dict[str, str]]:
    problems.check(Step.QUERY)
    return _DOCUMENT, 200, {"Content-Type": "application/yaml"}
