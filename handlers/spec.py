"""The OpenAPI document, as the server validates against it."""

from __future__ import annotations

from nico_api.config import SPEC_PATH

_DOCUMENT = SPEC_PATH.read_bytes()


def get_openapi() -> tuple[bytes, int, dict[str, str]]:
    return _DOCUMENT, 200, {"Content-Type": "application/yaml"}
