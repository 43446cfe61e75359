"""Shared fixtures: a fresh database per test (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from connexion import AsyncApp
from sqlalchemy import Engine, MetaData, text
from starlette.testclient import TestClient

from nico_api import db, fixture
from nico_api.app import create_app
from nico_api.config import Settings
from nico_api.dev_issuer import DevIssuer
from tests.processes import NICO_API, free_port, run, serving

POSTGRES_URL_VAR = "NICO_TEST_DATABASE_URL"
# The `bearer` fixture: authorization headers for a caller of an org with roles.
Bearer = Callable[..., dict[str, str]]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'nico.db'}"
    url = os.environ.get(POSTGRES_URL_VAR)
    if not url:
        pytest.skip(f"{POSTGRES_URL_VAR} is not set: no PostgreSQL server to test against")
    return url


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    # Responses are validated against openapi.yaml in every test: a spec mismatch is a 500.
    return Settings(
        instance_dir=tmp_path / "instance", database_url=database_url, validate_responses=True
    )


def reset(engine: Engine) -> None:
    """An empty database, with no tables at all."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
        else:
            tables = MetaData()
            tables.reflect(connection)
            tables.drop_all(connection)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = db.connect(settings)
    reset(engine)
    db.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def app(settings: Settings, engine: Engine) -> Iterator[AsyncApp]:
    app = create_app(settings)
    fixture.load(fixture.demo())
    yield app
    db.dispose()


@pytest.fixture
def client(app: AsyncApp) -> Iterator[TestClient]:
    with app.test_client() as client:
        yield client


@pytest.fixture
def issuer(settings: Settings, app: AsyncApp) -> DevIssuer:
    return DevIssuer(settings)


@pytest.fixture
def bearer(issuer: DevIssuer) -> Bearer:
    """Authorization headers for a caller of `org` with `roles`."""

    def make(org: str = "acme-inc", *roles: str) -> dict[str, str]:
        token = issuer.issue(org, roles or ("PROVIDER_ADMIN",))
        return {"Authorization": f"Bearer {token}"}

    return make


@pytest.fixture
def env(settings: Settings, engine: Engine) -> dict[str, str]:
    """The environment of a nico-api process that uses this test's database."""
    return {
        **os.environ,
        "NICO_INSTANCE_DIR": str(settings.instance_dir),
        "NICO_DATABASE_URL": settings.database_url,
    }


@pytest.fixture
def workers() -> int:
    return 1


@pytest.fixture
def server(env: dict[str, str], workers: int, tmp_path: Path) -> Iterator[str]:
    """`nico-api serve` with the demo data, on a free loopback port: its base URL."""
    assert run(env, "db", "seed", "--demo").returncode == 0
    port = free_port()
    command = [NICO_API, "serve", "--port", str(port), "--workers", str(workers)]
    with serving(command, env, tmp_path / "server.log", port) as base_url:
        yield base_url
