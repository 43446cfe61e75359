"""The suite's plugin: the shared fixtures (tests/fixtures.py), loaded where tests run. The
controller of parallel test processes runs none, so it leaves them (and the package they
import, about 1.5 s) to its workers."""

from __future__ import annotations

import pytest

# The fixtures of tests that run `nico-api` processes: such tests are `slow`.
PROCESS_FIXTURES = {"server", "demo_server", "env", "cli_env"}


def pytest_configure(config: pytest.Config) -> None:
    controller = bool(config.getoption("numprocesses", None)) and not hasattr(config, "workerinput")
    if not controller:
        config.pluginmanager.import_plugin("tests.fixtures")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
