"""The lists' totals are kept counts: after every kind of write they equal a count of the rows."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, delete, insert, select, text, update
from sqlalchemy.exc import OperationalError
from starlette.testclient import TestClient

from nico_api import db, fixture
from nico_api.models import Task, TaskComponent, TaskCount, utcnow
from nico_api.queries import ACTIVE_FLOW_STATUSES, CANCEL_TASK
from tests.demo import (
    ACME,
    ACME_SITE,
    ACME_SITE_2,
    COMPLETED_TASK,
    PENDING_TASK,
    RUNNING_TASK,
    WAITING_TASK,
)
from tests.test_list_tasks import RACK, TRAY, Bearer, listing, pagination

Key = tuple[uuid.UUID, str, uuid.UUID, bool]
WRITERS = 4
STATUSES = ("pending", "waiting", "running", "completed", "failed", "terminated", "unknown")


def counted(engine: Engine) -> Counter[Key]:
    """What the rows say: every task at its site and rack, and at each component it targets."""
    with engine.connect() as connection:
        tasks = connection.execute(select(Task.id, Task.site_id, Task.rack_id, Task.status)).all()
        targets = connection.execute(select(TaskComponent.task_id, TaskComponent.component_id))
        expected: Counter[Key] = Counter()
        where = {}
        for task in tasks:
            active = task.status in ACTIVE_FLOW_STATUSES
            where[task.id] = (task.site_id, active)
            expected[(task.site_id, "site", task.site_id, active)] += 1
            if task.rack_id is not None:
                expected[(task.site_id, "rack", task.rack_id, active)] += 1
        for target in targets:
            site, active = where[target.task_id]
            expected[(site, "component", target.component_id, active)] += 1
    return expected


def kept(engine: Engine) -> Counter[Key]:
    with engine.connect() as connection:
        rows = connection.execute(select(TaskCount.__table__)).all()
    return Counter(
        {(row.site_id, row.scope, row.scope_id, row.active): row.tasks for row in rows if row.tasks}
    )


def tasks_file(*tasks: dict) -> fixture.FixtureFile:
    return fixture.FixtureFile.model_validate({"tasks": list(tasks)})


def test_counts_follow_every_write(engine: Engine) -> None:
    fixture.load(fixture.demo())
    assert kept(engine) == counted(engine)
    assert {scope for _, scope, _, _ in kept(engine)} == {"site", "rack", "component"}

    # Reloading moves a task to another rack, another status and other trays; a new one arrives.
    new_rack, new_tray = uuid.uuid4(), uuid.uuid4()
    fixture.load(
        tasks_file(
            {
                "id": RUNNING_TASK,
                "site_id": ACME_SITE,
                "rack_id": str(new_rack),
                "status": "completed",
                "tray_ids": [TRAY, str(new_tray)],
            },
            {"id": str(uuid.uuid4()), "site_id": ACME_SITE, "status": "running", "rack_id": RACK},
        )
    )
    assert kept(engine) == counted(engine)

    # Cancelling, moving a task to another site, deleting targets and a task.
    with db.transaction() as session:
        session.execute(CANCEL_TASK, {"task_id": uuid.UUID(PENDING_TASK), "now": utcnow()})
        session.execute(
            update(Task)
            .where(Task.id == uuid.UUID(RUNNING_TASK))
            .values(site_id=uuid.UUID(ACME_SITE_2), status="running")
        )
    assert kept(engine) == counted(engine)
    with db.transaction() as session:
        session.execute(delete(TaskComponent).where(TaskComponent.component_id == new_tray))
        session.execute(update(TaskComponent).values(component_id=new_tray))
        session.execute(delete(Task).where(Task.id == uuid.UUID(COMPLETED_TASK)))
    assert kept(engine) == counted(engine)
    with db.transaction() as session:
        session.execute(delete(TaskComponent))
        session.execute(delete(Task))
    assert kept(engine) == Counter()


def test_the_migration_counts_the_tasks_already_stored(engine: Engine) -> None:
    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0002")
    fixture.load(fixture.demo())
    db.upgrade(engine)
    assert kept(engine) == counted(engine) != Counter()


def test_totals_follow_a_cancel(client: TestClient, bearer: Bearer) -> None:
    before = pagination(listing(client, bearer(), activeOnly=True))["total"]
    rack_before = pagination(
        listing(client, bearer(), f"/v2/org/{ACME}/nico/rack/{RACK}/task", activeOnly=True)
    )["total"]
    cancelled = client.post(
        f"/v2/org/{ACME}/nico/task/{RUNNING_TASK}/cancel",
        json={"siteId": ACME_SITE},
        headers=bearer(),
    )
    assert cancelled.status_code == 202
    assert pagination(listing(client, bearer(), activeOnly=True))["total"] == before - 1
    rack_after = listing(client, bearer(), f"/v2/org/{ACME}/nico/rack/{RACK}/task", activeOnly=True)
    assert pagination(rack_after)["total"] == rack_before - 1
    tray = listing(client, bearer(), f"/v2/org/{ACME}/nico/tray/{TRAY}/task", activeOnly=True)
    assert tray.json() == [] and pagination(tray)["total"] == 0
    assert (
        pagination(listing(client, bearer()))["total"]
        == pagination(listing(client, bearer(), pageSize=100))["total"]
    )


def test_concurrent_writers_keep_exact_counts(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite takes one writer at a time: concurrency is PostgreSQL's to prove")
    fixture.load(fixture.demo())
    trays = [uuid.uuid4() for _ in range(3)]

    def write(worker: int) -> None:
        # Each writer adds tasks to the same site, rack and trays, and cancels some of them.
        for n in range(20):
            task_id = uuid.uuid4()
            with db.transaction() as session:
                session.execute(
                    insert(Task).values(
                        id=task_id,
                        site_id=uuid.UUID(ACME_SITE),
                        rack_id=uuid.UUID(RACK),
                        status=STATUSES[(worker + n) % len(STATUSES)],
                    )
                )
                for tray in trays[: n % 4]:
                    session.execute(
                        insert(TaskComponent).values(task_id=task_id, component_id=tray)
                    )
            if n % 3 == 0:
                with db.transaction() as session:
                    session.execute(CANCEL_TASK, {"task_id": task_id, "now": utcnow()})

    # As many writers as the pool has connections, all at once.
    with ThreadPoolExecutor(max_workers=WRITERS) as pool:
        list(pool.map(write, range(WRITERS)))
    with db.transaction() as session:
        for task in (PENDING_TASK, WAITING_TASK):
            session.execute(CANCEL_TASK, {"task_id": uuid.UUID(task), "now": utcnow()})
    assert kept(engine) == counted(engine)
    at_rack = kept(engine)[(uuid.UUID(ACME_SITE), "rack", uuid.UUID(RACK), False)]
    assert at_rack >= WRITERS * 20 // 3


def test_a_cancel_meeting_a_load_head_on(
    engine: Engine, client: TestClient, bearer: Bearer
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite takes one writer at a time: concurrency is PostgreSQL's to prove")
    headers = bearer()
    with engine.connect() as load, ThreadPoolExecutor(max_workers=1) as pool:
        # The load holds the site's counts (it added a task) and goes on to rewrite the running
        # task, which the cancel has locked while it waits for the counts: one must give way.
        transaction = load.begin()
        load.execute(
            insert(Task).values(id=uuid.uuid4(), site_id=uuid.UUID(ACME_SITE), status="pending")
        )
        cancel = pool.submit(
            client.post,
            f"/v2/org/{ACME}/nico/task/{RUNNING_TASK}/cancel",
            json={"siteId": ACME_SITE},
            headers=headers,
        )
        _wait_for_an_advisory_lock_wait(engine)
        try:
            load.execute(
                update(Task).where(Task.id == uuid.UUID(RUNNING_TASK)).values(status="completed")
            )
            transaction.commit()
            loaded = True
        except OperationalError as exc:
            assert "deadlock detected" in str(exc.orig)
            transaction.rollback()
            loaded = False
        response = cancel.result(timeout=30)
    if loaded:
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "5"
        assert response.json()["source"] == "nico"
    else:
        assert response.status_code == 202, response.text
    assert kept(engine) == counted(engine)


def _wait_for_an_advisory_lock_wait(engine: Engine) -> None:
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"
    )
    deadline = time.monotonic() + 10
    with engine.connect() as connection:
        while not connection.execute(waiting).scalar_one():
            assert time.monotonic() < deadline, "the cancel never waited for the site's counts"
            time.sleep(0.02)
