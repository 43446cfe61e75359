"""The documentation page, in a real headless browser: Swagger UI loads the served spec and
shows the "Retrieve a Task" operation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.processes import CHROMIUM, headless_dom

# Real processes, servers or browsers: run by `make test`, left out by `make test-fast`.
pytestmark = pytest.mark.slow


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium browser here (Debian package chromium)")
def test_swagger_ui_shows_retrieve_a_task(server: str, tmp_path: Path) -> None:
    dom = headless_dom(f"{server}/v2/docs/", tmp_path / "profile")
    assert "swagger-ui" in dom
    assert "Retrieve a Task" in dom, dom[-3000:]
    assert "NICo REST API - Task" in dom
    assert "/v2/org/{org}/nico/task/{id}" in dom
