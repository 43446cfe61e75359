"""The documentation page, in a real headless browser: Swagger UI loads the served spec and
shows the "Retrieve a Task" operation."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

# Real processes, servers or browsers: run by `make test`, left out by `make test-fast`.
pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium browser here (Debian package chromium)")
def test_swagger_ui_shows_retrieve_a_task(server: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=20000",
            "--dump-dom",
            f"{server}/v2/docs/",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert "swagger-ui" in dom
    assert "Retrieve a Task" in dom, dom[-3000:]
    assert "NICo REST API - Task" in dom
    assert "/v2/org/{org}/nico/task/{id}" in dom
