"""Shared fixtures, on SQLite and (when configured) PostgreSQL (a plugin: tests/conftest.py).

Each backend's schema is migrated once per session, into two templates: empty, and with the
demo data. A test gets a clean database by copying a template (a file copy on SQLite, `CREATE
DATABASE ... TEMPLATE` on PostgreSQL), and the one app of the session, whose pool is emptied
first. Tests that start processes, servers or database instances are marked `slow`.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, MetaData, bindparam, make_url, text
from starlette.testclient import TestClient

from nico_api.auth.dev_issuer import DevIssuer
from nico_api.config import Settings
from nico_api.storage import fixture
from nico_api.storage.db import Storage
from nico_api.web.app import create_app
from nico_api.web.framework import NICoApp
from tests.loop_client import LoopClient
from tests.processes import NICO_API, free_port, log_lines, serving

POSTGRES_URL_VAR = "NICO_TEST_DATABASE_URL"
# The `bearer` fixture: authorization headers for a caller of an org with roles.
Bearer = Callable[..., dict[str, str]]
TEMPLATES = ("empty", "demo")


# The fixtures whose database holds the demo data (others start from an empty one).
DEMO_FIXTURES = {"app", "server"}


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


class TestDatabase:
    """A backend's database for the tests, made fresh from a template before each test."""

    def __init__(self, url: str) -> None:
        self.url = url

    def fresh(self, template: str, storage: Storage) -> None:
        """The database as `template` holds it, for the app whose `storage` uses it."""
        raise NotImplementedError

    def copy(self, template: str, name: str) -> str:
        """Another database, `name`, as `template` holds it (for a server of the session)."""
        raise NotImplementedError


class SQLiteDatabase(TestDatabase):
    """A copy of the template's file (a few kilobytes) for each test."""

    def __init__(self, directory: Path) -> None:
        self.file = directory / "nico.db"
        self.templates = {name: directory / f"{name}.db" for name in TEMPLATES}
        for name, path in self.templates.items():
            _build_template(f"sqlite:///{path}", demo=name == "demo")
        super().__init__(f"sqlite:///{self.file}")

    def fresh(self, template: str, storage: Storage) -> None:
        storage.dispose()
        for leftover in self.file.parent.glob(self.file.name + "-*"):
            leftover.unlink()  # the write-ahead log of the last test's database
        # A new file replaces the old: a connection still open elsewhere keeps the old one.
        copy = self.file.with_name(".copy-" + self.file.name)
        shutil.copyfile(self.templates[template], copy)
        os.replace(copy, self.file)

    def copy(self, template: str, name: str) -> str:
        path = self.file.with_name(f"{name}.db")
        shutil.copyfile(self.templates[template], path)
        return f"sqlite:///{path}"


# The catalogs that describe the schema, each narrowed to the public schema's objects.
_PUBLIC = "'public'::regnamespace"
SCHEMA_CATALOGS = (
    ("pg_class", f"relnamespace = {_PUBLIC}"),
    ("pg_attribute", f"attrelid IN (SELECT oid FROM pg_class WHERE relnamespace = {_PUBLIC})"),
    ("pg_trigger", f"tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace = {_PUBLIC})"),
    ("pg_proc", f"pronamespace = {_PUBLIC}"),
    ("pg_constraint", f"connamespace = {_PUBLIC}"),
    ("pg_type", f"typnamespace = {_PUBLIC}"),
    ("pg_namespace", "true"),
)


TABLES = "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
SEQUENCES = "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'"
# Sessions with a transaction open in a database: changes the fingerprint cannot see yet.
OPEN_TRANSACTIONS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND xact_start IS NOT NULL"
)


class PostgreSQLDatabase(TestDatabase):
    """The template's database for each test that follows a change. What a test changed is told
    by a fingerprint of the database: for its schema's catalog rows and for each of its tables,
    how many rows there are and their newest row version (`xmin`, which every insert, update and
    schema change writes anew). A database whose fingerprint is unchanged is reused as it is;
    one whose rows alone changed gets the template's rows back (triggers off, as the template
    holds them); any other is made again with `CREATE DATABASE ... TEMPLATE`."""

    def __init__(self, url: str) -> None:
        # The configured database is only where databases are created: the tests use their own.
        base = make_url(url)
        # Each test run, and each of its parallel workers (pytest-xdist), has databases of its
        # own, dropped at its end.
        run = os.environ.get("PYTEST_XDIST_TESTRUNUID", uuid.uuid4().hex)[:8]
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        prefix = f"{base.database}_nico_{run}_{worker}"
        self.target = f"{prefix}_run"
        self.templates = {name: f"{prefix}_{name}" for name in TEMPLATES}
        self._dsn = base.set(drivername="postgresql")
        self.admin = psycopg.connect(self._dsn.render_as_string(False), autocommit=True)
        for name, database in self.templates.items():
            self._create(database, "template0")
            _build_template(
                base.set(database=database).render_as_string(hide_password=False),
                demo=name == "demo",
            )
        self._watch: psycopg.Connection | None = None
        self._fingerprint_query = ""
        self.clean: tuple[str, tuple | None] | None = None  # the template and its fingerprint
        self.copies: list[str] = []
        self._rows: dict[str, dict[str, bytes]] = {}
        self._sequences: dict[str, list[tuple[str, int, bool]]] = {}
        super().__init__(base.set(database=self.target).render_as_string(hide_password=False))

    def _create(self, name: str, template: str) -> None:
        self.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')

    def _fingerprint(self) -> tuple | None:
        """The target database's fingerprint; None when it cannot be read (tables gone)."""
        try:
            if self._watch is None or self._watch.closed:
                dsn = self._dsn.set(database=self.target).render_as_string(False)
                self._watch = psycopg.connect(dsn, autocommit=True)
                tables = self._watch.execute(TABLES).fetchall()
                parts = [
                    *(
                        f"(SELECT count(*) || ' ' || coalesce(max(xmin::text::bigint), 0)"
                        f" FROM {catalog} WHERE {public})"
                        for catalog, public in SCHEMA_CATALOGS
                    ),
                    *(
                        f"(SELECT count(*) || ' ' || coalesce(max(xmin::text::bigint), 0)"
                        f' FROM public."{name}")'
                        for (name,) in tables
                    ),
                ]
                self._fingerprint_query = "SELECT " + ", ".join(parts)
            row = self._watch.execute(self._fingerprint_query).fetchone()
        except psycopg.Error:
            self._close_watch()
            return None
        return tuple(row) if row else None

    def _transactions_open(self) -> bool:
        try:
            row = self.admin.execute(OPEN_TRANSACTIONS, (self.target,)).fetchone()
        except psycopg.Error:
            return True
        return bool(row and row[0])

    def _close_watch(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    def fresh(self, template: str, storage: Storage) -> None:
        # The app's connections start afresh, with no session state left by the last test.
        storage.dispose()
        fingerprint = None if self._transactions_open() else self._fingerprint()
        if self.clean == (template, fingerprint):
            return  # the last test changed nothing
        schema = len(SCHEMA_CATALOGS)
        same_schema = (
            self.clean is not None
            and fingerprint is not None
            and self.clean[1] is not None
            and fingerprint[:schema] == self.clean[1][:schema]
        )
        if not (same_schema and self._put_rows_back(template)):
            self._close_watch()
            self._create(self.target, self.templates[template])
        fingerprint = self._fingerprint()
        assert fingerprint is not None
        self.clean = (template, fingerprint)

    def _put_rows_back(self, template: str) -> bool:
        """Every table's rows replaced by the template's; false when that could not be done
        (a lock held elsewhere, or a role that may not turn triggers off)."""
        rows = self._rows_of(template)
        assert self._watch is not None
        try:
            with self._watch.transaction():
                # Rows as the template holds them: no trigger counts them again.
                self._watch.execute("SET LOCAL session_replication_role = replica")
                self._watch.execute("SET LOCAL lock_timeout = '2s'")
                for name in rows:
                    self._watch.execute(f'DELETE FROM public."{name}"')
                for name, data in rows.items():
                    with self._watch.cursor().copy(f'COPY public."{name}" FROM STDIN') as copy:
                        copy.write(data)
                for name, value, called in self._sequences[template]:
                    self._watch.execute(
                        "SELECT setval(%s, %s, %s)", (f'public."{name}"', value, called)
                    )
        except psycopg.Error:
            return False
        return True

    def _rows_of(self, template: str) -> dict[str, bytes]:
        """Each table's rows in a template, as COPY writes them; read once."""
        if template not in self._rows:
            dsn = self._dsn.set(database=self.templates[template]).render_as_string(False)
            with psycopg.connect(dsn, autocommit=True) as source:
                rows = {}
                for (name,) in source.execute(TABLES).fetchall():
                    with source.cursor().copy(f'COPY public."{name}" TO STDOUT') as copy:
                        rows[name] = b"".join(bytes(block) for block in copy)
                self._sequences[template] = [
                    (
                        name,
                        *source.execute(
                            f'SELECT last_value, is_called FROM public."{name}"'
                        ).fetchone(),
                    )
                    for (name,) in source.execute(SEQUENCES).fetchall()
                ]
            self._rows[template] = rows
        return self._rows[template]

    def copy(self, template: str, name: str) -> str:
        database = f"{self.target}_{name}"
        self._create(database, self.templates[template])
        self.copies.append(database)
        return self._dsn.set(drivername="postgresql+psycopg", database=database).render_as_string(
            hide_password=False
        )

    def close(self) -> None:
        self._close_watch()
        for name in (self.target, *self.templates.values(), *self.copies):
            self.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.admin.close()


@functools.cache
def demo_data() -> fixture.FixtureFile:
    """The demo file, parsed once for the session: a load reads it and changes nothing in it."""
    return fixture.demo()


def _build_template(url: str, *, demo: bool) -> None:
    storage = Storage(Settings(instance_dir=Path("unused"), database_url=url))
    try:
        storage.upgrade()
        if demo:
            fixture.load(storage, demo_data())
    finally:
        storage.dispose()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def test_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestDatabase]:
    if request.param == "sqlite":
        yield SQLiteDatabase(tmp_path_factory.mktemp("sqlite"))
        return
    url = os.environ.get(POSTGRES_URL_VAR)
    if not url:
        pytest.skip(f"{POSTGRES_URL_VAR} is not set: no PostgreSQL server to test against")
    database = PostgreSQLDatabase(url)
    yield database
    database.close()


@pytest.fixture(scope="session")
def instance_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One instance folder (and development key) for both backends' apps."""
    return tmp_path_factory.mktemp("instance")


@pytest.fixture(scope="session")
def settings(test_database: TestDatabase, instance_dir: Path) -> Settings:
    # Responses are validated against openapi.yaml in every test: a spec mismatch is a 500.
    return Settings(
        instance_dir=instance_dir,
        database_url=test_database.url,
        validate_responses=True,
    )


@pytest.fixture(scope="session")
def session_app(settings: Settings) -> Iterator[NICoApp]:
    app = create_app(settings)
    yield app
    app.runtime.close()


@pytest.fixture
def served_app(session_app: NICoApp) -> NICoApp:
    """The app the `app` and `client` fixtures serve; a module may serve another."""
    return session_app


@pytest.fixture
def storage(
    request: pytest.FixtureRequest, test_database: TestDatabase, served_app: NICoApp
) -> Storage:
    """The app's storage over a fresh database: migrated, and holding the demo data when the
    test uses the app or a server."""
    storage = served_app.runtime.storage
    demo = DEMO_FIXTURES & set(request.fixturenames)
    test_database.fresh("demo" if demo else "empty", storage)
    return storage


@pytest.fixture
def engine(storage: Storage) -> Engine:
    return storage.engine


@pytest.fixture
def app(served_app: NICoApp, storage: Storage) -> NICoApp:
    """The app, over a fresh database holding the demo data."""
    return served_app


@pytest.fixture
def client(app: NICoApp) -> Iterator[TestClient]:
    """The app served on this thread's own event loop (tests/loop_client.py)."""
    with LoopClient(app) as client:
        yield client  # type: ignore[misc]


@pytest.fixture
def threaded_client(app: NICoApp) -> Iterator[TestClient]:
    """The app served on a thread of its own, for requests sent from several threads at once."""
    with app.test_client() as client:
        yield client


@pytest.fixture
def issuer(session_app: NICoApp) -> DevIssuer:
    dev_issuer = session_app.runtime.dev_issuer
    assert dev_issuer is not None
    return dev_issuer


@pytest.fixture(scope="session")
def signed() -> dict[tuple[str, ...], str]:
    """The tokens `bearer` has signed this session."""
    return {}


@pytest.fixture
def bearer(issuer: DevIssuer, signed: dict[tuple[str, ...], str]) -> Bearer:
    """Authorization headers for a caller of `org` with `roles`: one token per key, org and roles
    for the session (each signature costs about 1 ms; a token is valid for an hour)."""

    def make(org: str = "acme-inc", *roles: str) -> dict[str, str]:
        key = (issuer.key_id, org, *roles)
        token = signed.get(key)
        if token is None:
            token = signed[key] = issuer.issue(org, roles or ("PROVIDER_ADMIN",))
        return {"Authorization": f"Bearer {token}"}

    return make


@pytest.fixture
def env(settings: Settings, storage: Storage) -> dict[str, str]:
    """The environment of a nico-api process that uses this test's (empty, migrated) database,
    and whose instance folder has its development key, as a served instance has."""
    DevIssuer(settings)
    return {
        **os.environ,
        "NICO_INSTANCE_DIR": str(settings.instance_dir),
        "NICO_DATABASE_URL": settings.database_url,
    }


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a nico-api command that needs no database: its own instance folder."""
    return {
        **os.environ,
        "NICO_INSTANCE_DIR": str(tmp_path / "instance"),
        "NICO_DATABASE_URL": f"sqlite:///{tmp_path / 'unused.db'}",
    }


@pytest.fixture
def workers() -> int:
    return 1


@contextmanager
def demo_served(
    test_database: TestDatabase,
    settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    **environment: str,
) -> Iterator[str]:
    """`nico-api serve` (with `environment` added) over a database of its own, `name`, holding
    the demo data, for the block: for tests that only read, sharing one server. Its base URL."""
    env = {
        **os.environ,
        "NICO_INSTANCE_DIR": str(settings.instance_dir),
        "NICO_DATABASE_URL": test_database.copy("demo", name),
        **environment,
    }
    port = free_port()
    log = tmp_path_factory.mktemp(name) / "server.log"
    with serving([NICO_API, "serve", "--port", str(port)], env, log, port) as base_url:
        yield base_url


@pytest.fixture(scope="session")
def demo_server(
    test_database: TestDatabase, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`nico-api serve` for the session over the demo data, for tests that only read."""
    with demo_served(test_database, settings, tmp_path_factory, "served") as base_url:
        yield base_url


@pytest.fixture
def server(env: dict[str, str], workers: int, tmp_path: Path) -> Iterator[str]:
    """`nico-api serve` with the demo data, on a free loopback port: its base URL."""
    port = free_port()
    # Debug logs: each order received is a line (`orders_logged`).
    command = [NICO_API, "serve", "--port", str(port), "--workers", str(workers)]
    command += ["--log-level", "debug"]
    with serving(command, env, tmp_path / "server.log", port, workers=workers) as base_url:
        yield base_url


@contextmanager
def racks_held(engine: Engine, *external_ids: str) -> Iterator[None]:
    """The racks locked by another writer for the block (on SQLite, the whole database), so
    that requests for them are in flight at once until it ends."""
    with engine.connect() as holder:
        if holder.dialect.name == "postgresql":
            holder.execute(
                text(
                    "SELECT id FROM rack WHERE external_id IN :r ORDER BY id FOR UPDATE"
                ).bindparams(bindparam("r", expanding=True)),
                {"r": list(external_ids)},
            )
        else:
            holder.execute(
                text("UPDATE rack SET name = name WHERE external_id IN :r").bindparams(
                    bindparam("r", expanding=True)
                ),
                {"r": list(external_ids)},
            )
        try:
            yield
        finally:
            holder.rollback()


def in_flight_together(
    *requests: Callable[[], Any],
    engine: Engine,
    racks: Sequence[str],
    received: Callable[[], int],
) -> list[Any]:
    """The answers to `requests`, sent at once while `racks` are held, in the order given: the
    racks are let go once `received()` (the orders the server has received) counts them all."""
    answers: list[Any] = [None] * len(requests)

    def send(i: int) -> None:
        answers[i] = requests[i]()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    with racks_held(engine, *racks):
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while received() < len(requests):
            early = [answer for answer in answers if answer is not None]
            assert not early, f"answered while the racks were held: {early[0]}"
            assert time.monotonic() < deadline, f"{received()} of {len(requests)} received"
            time.sleep(0.01)
    for thread in threads:
        thread.join(60)
    return answers


@contextmanager
def orders_received() -> Iterator[Callable[[], int]]:
    """How many orders this process's apps have received so far (their debug records)."""
    seen: list[logging.LogRecord] = []

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    logger, handler = logging.getLogger("nico_api.store"), Count(logging.DEBUG)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield lambda: sum(record.getMessage() == "order received" for record in list(seen))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def orders_logged(log: Path) -> int:
    """How many orders a server has received so far, from its debug log."""
    return sum(line.get("message") == "order received" for line in log_lines(log))
