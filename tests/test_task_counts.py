"""The lists' totals are kept counts: after every kind of write they equal a count of the rows."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import (
    Engine,
    MetaData,
    Table,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from starlette.testclient import TestClient

from nico_api.storage import db, fixture
from nico_api.storage.db import Storage
from nico_api.storage.models import (
    InfrastructureProvider,
    Site,
    Task,
    TaskComponent,
    TaskCount,
    TaskCountChange,
    utcnow,
)
from nico_api.storage.queries import CANCEL_TASK
from nico_api.vocabulary import ACTIVE_STATUSES
from tests.demo import (
    ACME,
    ACME_SITE,
    ACME_SITE_2,
    COMPLETED_TASK,
    PENDING_TASK,
    RACK,
    RACK_RECORD,
    RUNNING_TASK,
    TRAY,
    TRAY_RECORD,
    WAITING_TASK,
)
from tests.fixtures import Bearer, demo_data
from tests.processes import run
from tests.test_list_tasks import listing, pagination

Key = tuple[uuid.UUID, str, uuid.UUID, bool]
WRITERS = 4
# The tables of the schema before the counts (migration 0002).
OLD = ("infrastructure_provider", "site", "task")
STATUSES = ("pending", "waiting", "running", "completed", "failed", "terminated", "unknown")


def counted(engine: Engine) -> Counter[Key]:
    """What the rows say: every task at its site and rack, and at each component it targets."""
    with engine.connect() as connection:
        tasks = connection.execute(select(Task.id, Task.site_id, Task.rack_id, Task.status)).all()
        targets = connection.execute(select(TaskComponent.task_id, TaskComponent.component_id))
        expected: Counter[Key] = Counter()
        where = {}
        for task in tasks:
            active = task.status in ACTIVE_STATUSES
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
        # Every committed transaction's changes have been folded into the counts.
        assert connection.scalar(select(func.count()).select_from(TaskCountChange)) == 0
        rows = connection.execute(select(TaskCount.__table__)).all()
    return Counter(
        {(row.site_id, row.scope, row.scope_id, row.active): row.tasks for row in rows if row.tasks}
    )


def concurrency_on_postgresql(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite takes one writer at a time: concurrency is PostgreSQL's to prove")


def tasks_file(*tasks: dict) -> fixture.FixtureFile:
    return fixture.FixtureFile.model_validate({"tasks": list(tasks)})


def test_counts_follow_every_write(storage: Storage, engine: Engine) -> None:
    fixture.load(storage, demo_data())
    assert kept(engine) == counted(engine)
    assert {scope for _, scope, _, _ in kept(engine)} == {"site", "rack", "component"}

    # Reloading moves a task to another rack, another status and other trays; a new one arrives.
    new_rack, new_tray = uuid.uuid4(), uuid.uuid4()
    fixture.load(
        storage,
        tasks_file(
            {
                "id": RUNNING_TASK,
                "site_id": ACME_SITE,
                "rack_id": str(new_rack),
                "status": "completed",
                "tray_ids": [TRAY_RECORD, str(new_tray)],
            },
            {
                "id": str(uuid.uuid4()),
                "site_id": ACME_SITE,
                "status": "running",
                "rack_id": RACK_RECORD,
            },
        ),
    )
    assert kept(engine) == counted(engine)

    # Cancelling, moving a task to another site and out of its rack, deleting targets and a task.
    with storage.transaction() as session:
        session.execute(CANCEL_TASK, {"task_id": uuid.UUID(PENDING_TASK), "now": utcnow()})
        session.execute(
            update(Task)
            .where(Task.id == uuid.UUID(RUNNING_TASK))
            .values(site_id=uuid.UUID(ACME_SITE_2), status="running", rack_id=None)
        )
    assert kept(engine) == counted(engine)
    with storage.transaction() as session:
        session.execute(delete(TaskComponent).where(TaskComponent.component_id == new_tray))
        session.execute(update(TaskComponent).values(component_id=new_tray))
        session.execute(delete(Task).where(Task.id == uuid.UUID(COMPLETED_TASK)))
    assert kept(engine) == counted(engine)
    with storage.transaction() as session:
        session.execute(delete(TaskComponent))
        session.execute(delete(Task))
    assert kept(engine) == Counter()


def test_the_migration_counts_the_tasks_already_stored(storage: Storage, engine: Engine) -> None:
    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0002")
    demo = demo_data()
    # The demo's records as the 0002 schema stores them: only the columns its tables have.
    existing = {name: {c["name"] for c in inspect(engine).get_columns(name)} for name in OLD}
    with engine.begin() as connection:
        for kind, model in (
            ("providers", InfrastructureProvider),
            ("sites", Site),
            ("tasks", Task),
        ):
            columns = existing[model.__tablename__]
            table = Table(
                model.__tablename__,
                MetaData(),
                *(column._copy() for column in model.__table__.columns if column.name in columns),
            )
            rows = [record.columns() for record in getattr(demo, kind)]
            connection.execute(
                insert(table), [{k: v for k, v in row.items() if k in columns} for row in rows]
            )
        connection.execute(
            insert(TaskComponent),
            [{"task_id": t.id, "component_id": c} for t in demo.tasks for c in t.tray_ids],
        )
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


def test_concurrent_writers_keep_exact_counts(storage: Storage, engine: Engine) -> None:
    concurrency_on_postgresql(engine)
    fixture.load(storage, demo_data())
    trays = [uuid.uuid4() for _ in range(3)]

    def write(worker: int) -> None:
        # Each writer adds tasks to the same site, rack and trays, and cancels some of them.
        for n in range(20):
            task_id = uuid.uuid4()
            with storage.transaction() as session:
                session.execute(
                    insert(Task).values(
                        id=task_id,
                        site_id=uuid.UUID(ACME_SITE),
                        rack_id=uuid.UUID(RACK_RECORD),
                        status=STATUSES[(worker + n) % len(STATUSES)],
                    )
                )
                for tray in trays[: n % 4]:
                    session.execute(
                        insert(TaskComponent).values(task_id=task_id, component_id=tray)
                    )
            if n % 3 == 0:
                with storage.transaction() as session:
                    session.execute(CANCEL_TASK, {"task_id": task_id, "now": utcnow()})

    # As many writers as the pool has connections, all at once.
    with ThreadPoolExecutor(max_workers=WRITERS) as pool:
        list(pool.map(write, range(WRITERS)))
    with storage.transaction() as session:
        for task in (PENDING_TASK, WAITING_TASK):
            session.execute(CANCEL_TASK, {"task_id": uuid.UUID(task), "now": utcnow()})
    assert kept(engine) == counted(engine)
    at_rack = kept(engine)[(uuid.UUID(ACME_SITE), "rack", uuid.UUID(RACK_RECORD), False)]
    assert at_rack >= WRITERS * 20 // 3


def test_an_open_load_does_not_hold_up_a_cancel(
    engine: Engine, client: TestClient, bearer: Bearer
) -> None:
    concurrency_on_postgresql(engine)
    with engine.connect() as load:
        # A load at the site is under way: it added a task and rewrote another.
        transaction = load.begin()
        load.execute(
            insert(Task).values(id=uuid.uuid4(), site_id=uuid.UUID(ACME_SITE), status="pending")
        )
        load.execute(update(Task).where(Task.id == uuid.UUID(WAITING_TASK)).values(status="failed"))
        # A cancel at the same site neither waits for it (the statement timeout would make it a
        # 503) nor sees its uncommitted tasks.
        cancelled = client.post(
            f"/v2/org/{ACME}/nico/task/{RUNNING_TASK}/cancel",
            json={"siteId": ACME_SITE},
            headers=bearer(),
        )
        assert cancelled.status_code == 202, cancelled.text
        active = listing(client, bearer(), activeOnly=True)
        assert pagination(active)["total"] == 2  # pending and waiting, as committed
        # The load goes on to the task just cancelled, and commits.
        load.execute(
            update(Task).where(Task.id == uuid.UUID(RUNNING_TASK)).values(status="completed")
        )
        transaction.commit()
    assert kept(engine) == counted(engine)
    assert pagination(listing(client, bearer(), activeOnly=True))["total"] == 2  # pending, new


@pytest.mark.parametrize("first", ["trays", "cancel"])
@pytest.mark.parametrize("change", ["add", "remove"])
def test_trays_changing_while_their_task_is_cancelled(
    storage: Storage, engine: Engine, first: str, change: str
) -> None:
    concurrency_on_postgresql(engine)
    fixture.load(storage, demo_data())
    task, tray = uuid.UUID(RUNNING_TASK), uuid.UUID(TRAY_RECORD)
    if change == "add":
        tray = uuid.uuid4()
        trays = insert(TaskComponent).values(task_id=task, component_id=tray)
    else:
        trays = delete(TaskComponent).where(TaskComponent.task_id == task)
    statements = {
        "trays": (trays, {}),
        "cancel": (CANCEL_TASK, {"task_id": task, "now": utcnow()}),
    }
    second = "cancel" if first == "trays" else "trays"

    def write_second() -> None:
        with engine.begin() as connection:
            connection.execute(*statements[second])

    # Each write in its own transaction: the second starts while the first is still open.
    with engine.connect() as connection, ThreadPoolExecutor(max_workers=1) as pool:
        transaction = connection.begin()
        connection.execute(*statements[first])
        written = pool.submit(write_second)
        _wait_briefly_for_a_lock_wait(engine)
        transaction.commit()
        written.result(timeout=30)
    assert kept(engine) == counted(engine)


def _wait_briefly_for_a_lock_wait(engine: Engine) -> None:
    waiting = (
        select(func.count())
        .select_from(text("pg_stat_activity"))
        .where(text("wait_event_type = 'Lock'"))
    )
    deadline = time.monotonic() + 2
    with engine.connect() as connection:
        while not connection.scalar(waiting) and time.monotonic() < deadline:
            time.sleep(0.02)


def test_truncating_empties_the_counts(storage: Storage, engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no TRUNCATE")
    fixture.load(storage, demo_data())
    with storage.transaction() as session:
        session.execute(text("TRUNCATE task_component"))
    assert kept(engine) == counted(engine) != Counter()
    with storage.transaction() as session:
        # Changes recorded earlier in the transaction go with the tasks.
        session.execute(update(Task).values(status="running"))
        session.execute(text("TRUNCATE task CASCADE"))
    assert kept(engine) == counted(engine) == Counter()


def test_db_recount_repairs_the_counts(
    storage: Storage, engine: Engine, env: dict[str, str]
) -> None:
    fixture.load(storage, demo_data())
    expected = counted(engine)
    with storage.transaction() as session:
        session.execute(update(TaskCount).values(tasks=TaskCount.tasks + 5))
        stray = uuid.uuid4()
        session.execute(
            insert(TaskCount).values(
                site_id=stray, scope="site", scope_id=stray, active=True, tasks=3
            )
        )
    assert kept(engine) != expected
    recounted = run(env, "db", "recount")
    assert recounted.returncode == 0, recounted.stderr
    assert recounted.stdout == f"recounted the task lists' totals: {len(expected)} counts\n"
    assert kept(engine) == expected


def test_db_recount_waits_for_a_running_writer(
    storage: Storage, engine: Engine, env: dict[str, str]
) -> None:
    concurrency_on_postgresql(engine)
    fixture.load(storage, demo_data())
    short = {**env, "NICO_DB_STATEMENT_TIMEOUT": "1"}
    with engine.connect() as writer, ThreadPoolExecutor(max_workers=1) as pool:
        transaction = writer.begin()
        writer.execute(
            insert(Task).values(id=uuid.uuid4(), site_id=uuid.UUID(ACME_SITE), status="pending")
        )
        recount = pool.submit(run, short, "db", "recount")
        _wait_briefly_for_a_lock_wait(engine)
        time.sleep(1.5)  # longer than the per-request statement limit
        assert not recount.done()
        transaction.commit()
        recounted = recount.result(timeout=30)
    assert recounted.returncode == 0, recounted.stderr
    assert kept(engine) == counted(engine)


def test_a_reload_leaves_unchanged_trays_alone(storage: Storage, engine: Engine) -> None:
    fixture.load(storage, demo_data())
    written: list[str] = []

    def record(*args: Any) -> None:
        if "task_component" in args[2] and not args[2].lstrip().upper().startswith("SELECT"):
            written.append(args[2])

    event.listen(engine, "before_cursor_execute", record)
    try:
        fixture.load(storage, demo_data())
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert written == []
    assert kept(engine) == counted(engine)
