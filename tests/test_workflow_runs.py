"""Identical orders in flight together make one set of tasks, whichever server process receives
each: Flow deduplicates them by workflow id in the database, as production's Flow does."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, func, select

from nico_api.flow import manager
from nico_api.storage.db import Storage
from nico_api.storage.models import Task, utcnow
from nico_api.web.framework import NICoApp
from tests.demo import ACME, ACME_SITE, FREE_RACK
from tests.fixtures import in_flight_together, orders_logged
from tests.processes import NICO_API, free_port, log_lines, run, serving

WORKFLOW = f"rack-power-state-update-on-{FREE_RACK}"


def _power_on(answer_seen: tuple[str, ...] | None) -> manager.Submission:
    return manager.Submission(
        site_id=uuid.UUID(ACME_SITE),
        operation="power_on",
        description="API power on Rack",
        information={},
        rack=FREE_RACK,
        workflow_id=WORKFLOW,
        answer_seen=answer_seen,
    )


def _seen(storage: Storage) -> tuple[str, ...]:
    with storage.connection() as c:
        return manager.answer_seen(c, uuid.UUID(ACME_SITE), WORKFLOW)


def _tasks(engine: Engine) -> int:
    with engine.connect() as c:
        return c.scalar(select(func.count()).select_from(Task).where(Task.plan.is_not(None)))


def test_an_order_received_before_an_identical_ones_answer_committed_joins_it(
    app: NICoApp, storage: Storage
) -> None:
    with storage.connection() as first, first.begin():
        made = manager.submit(first, _power_on(_seen(storage)), utcnow(), 60)
        # Received after the first order was answered, before its answer was committed.
        in_flight = _seen(storage)
    assert in_flight == ()
    with storage.connection() as c, c.begin():
        assert manager.submit(c, _power_on(in_flight), utcnow(), 60) == made
    # Received once the first answer was committed: a new order, queued behind the first.
    with storage.connection() as c, c.begin():
        later = manager.submit(c, _power_on(_seen(storage)), utcnow(), 60)
    assert later != made
    # And an order in flight with that one joins the later answer, not the first.
    with storage.connection() as c, c.begin():
        assert manager.submit(c, _power_on(tuple(made)), utcnow(), 60) == later
    assert _tasks(storage.engine) == 2


def test_orders_without_a_workflow_id_are_never_joined(app: NICoApp, storage: Storage) -> None:
    made = []
    for _ in range(2):
        order = _power_on(())
        order = manager.Submission(**{**order.__dict__, "workflow_id": None})
        with storage.connection() as c, c.begin():
            made.append(manager.submit(c, order, utcnow(), 60))
    assert made[0] != made[1]


def _orders_in_flight_together(
    engine: Engine, base_urls: Sequence[str], logs: Sequence[Path], token: str, count: int
) -> list[httpx.Response]:
    """`count` identical power-on orders, sent at once over new connections spread over the
    servers while the rack is held, held until every server process has received them all."""

    def order(i: int) -> Callable[[], httpx.Response]:
        return lambda: httpx.patch(
            f"{base_urls[i % len(base_urls)]}/v2/org/{ACME}/nico/rack/{FREE_RACK}/power",
            json={"siteId": ACME_SITE, "state": "On"},
            headers={"Authorization": f"Bearer {token}", "Connection": "close"},
            timeout=60,
        )

    answers = in_flight_together(
        *(order(i) for i in range(count)),
        engine=engine,
        racks=[FREE_RACK],
        received=lambda: sum(orders_logged(log) for log in logs),
    )
    assert all(a is not None for a in answers)
    return answers


def _one_task_for_all(
    engine: Engine, answers: Sequence[httpx.Response], logs: Sequence[Path]
) -> None:
    assert [a.status_code for a in answers] == [200] * len(answers), answers[0].text
    assert len({tuple(a.json()["taskIds"]) for a in answers}) == 1
    assert _tasks(engine) == 1
    served_by = {
        line["pid"]
        for log in logs
        for line in log_lines(log)
        if line.get("message") == "order received"
    }
    assert len(served_by) == 2, "both server processes received some of the orders"


@pytest.fixture
def token(env: dict[str, str]) -> str:
    # The caller is known before the orders: remembering it writes, which a held SQLite waits for.
    return run(env, "token", "--org", ACME, "--role", "PROVIDER_ADMIN").stdout.strip()


@pytest.fixture
def servers() -> Iterator[ExitStack]:
    """`nico-api serve` processes started by the test, stopped at its end."""
    with ExitStack() as stack:
        yield stack


def _serve(servers: ExitStack, env: dict[str, str], log: Path, workers: int = 1) -> str:
    """A server with debug logs, which name each order it receives: its base URL."""
    port = free_port()
    command = [NICO_API, "serve", "--port", str(port), "--workers", str(workers)]
    command += ["--log-level", "debug"]
    return servers.enter_context(serving(command, env, log, port, workers=workers))


def _known(base_url: str, token: str) -> None:
    response = httpx.get(
        f"{base_url}/v2/org/{ACME}/nico/user/current",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text


@pytest.mark.deep  # several server processes: `make test-deep`
def test_fifty_identical_orders_to_two_workers_make_one_task(
    app: NICoApp,
    storage: Storage,
    env: dict[str, str],
    token: str,
    servers: ExitStack,
    tmp_path: Path,
) -> None:
    log = tmp_path / "server.log"
    base_url = _serve(servers, env, log, workers=2)
    _known(base_url, token)
    answers = _orders_in_flight_together(storage.engine, [base_url], [log], token, 50)
    _one_task_for_all(storage.engine, answers, [log])


@pytest.mark.deep  # several server processes: `make test-deep`
def test_fifty_identical_orders_to_two_servers_on_one_database_make_one_task(
    app: NICoApp,
    storage: Storage,
    env: dict[str, str],
    token: str,
    servers: ExitStack,
    tmp_path: Path,
) -> None:
    if storage.engine.dialect.name != "postgresql":
        pytest.skip("servers on other machines share a PostgreSQL database")
    logs = [tmp_path / "one.log", tmp_path / "two.log"]
    base_urls = [_serve(servers, env, log) for log in logs]
    _known(base_urls[0], token)
    answers = _orders_in_flight_together(storage.engine, base_urls, logs, token, 50)
    _one_task_for_all(storage.engine, answers, logs)
