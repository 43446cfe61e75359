"""uvicorn as the edge relies on it: the installed version within the range pyproject.toml
declares (one minor, the tested one), and the settings `nico-api serve` passes taken as given.
What each setting does is tested over real sockets in tests/test_edge.py."""

from __future__ import annotations

import hashlib
import inspect
import tomllib
from importlib.metadata import version
from pathlib import Path

import uvicorn
from packaging.requirements import Requirement
from packaging.version import Version
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from nico_api.config import Settings
from nico_api.web import edge
from nico_api.web.protocol import BoundedHeadProtocol

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def declared(name: str) -> Requirement:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    return next(r for r in map(Requirement, dependencies) if r.name == name)


def test_the_installed_uvicorn_is_in_the_declared_range() -> None:
    installed = Version(version("uvicorn"))
    assert declared("uvicorn").specifier.contains(installed)


def test_the_declared_uvicorn_range_is_one_minor_version() -> None:
    """The edge uses uvicorn's settings as they behave in the tested minor version, and 0.x
    minors may change them: the range admits that minor alone."""
    specifier = declared("uvicorn").specifier
    installed = Version(version("uvicorn"))
    same_minor = Version(f"{installed.major}.{installed.minor}.99")
    next_minor = Version(f"{installed.major}.{installed.minor + 1}.0")
    assert specifier.contains(same_minor)
    assert not specifier.contains(next_minor)
    assert not specifier.contains(Version(f"{installed.major}.{installed.minor - 1}.99"))


def test_uvicorn_takes_the_edge_settings() -> None:
    settings = Settings.from_env({"NICO_MAX_HEADER_BYTES": "8192", "NICO_KEEPALIVE_TIMEOUT": "3"})
    config = uvicorn.Config("nico_api.web.app:serving_app", **edge.server_options(settings))
    assert config.h11_max_incomplete_event_size == 8192
    assert config.timeout_keep_alive == 3
    assert config.http is BoundedHeadProtocol
    assert config.loop == "asyncio"


def test_the_protocol_replaces_the_read_uvicorn_reviewed() -> None:
    """BoundedHeadProtocol.data_received stands in for uvicorn's own (docs/framework.md): a
    uvicorn whose read of a request changed must be read again before it is served with."""
    source = inspect.getsource(HttpToolsProtocol.data_received)
    assert hashlib.sha256(source.encode()).hexdigest()[:16] == "010a7ae59a5d3b1a"
    # What the protocol reads and calls on uvicorn's, by name.
    for name in ("parser", "pipeline", "cycle", "connections", "timeout_keep_alive_task"):
        assert name in inspect.getsource(HttpToolsProtocol.__init__)
    for name in ("send_400_response", "on_response_complete", "on_message_complete"):
        assert callable(getattr(HttpToolsProtocol, name))
