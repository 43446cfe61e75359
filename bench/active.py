"""A page of active tasks where they are few and old: 1,000,000 finished tasks at a site and 30
pending ones older than all of them. Times the list's two statements (page 2 of 20, and the
total) on SQLite and PostgreSQL, with the active-tasks index and without it."""

from __future__ import annotations

import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, create_engine, func, insert, select, text

from bench.run import database_url, publish
from nico_api.storage import db, models, queries

TASKS = 1_000_000
ACTIVE = 30
PROVIDER = uuid.UUID("0b6a3b6e-2f7d-4c1e-9a51-3d1f6c2a9e01")
SITE = uuid.UUID("6f1c0d2a-8b3e-4f5a-9c7d-1e2f3a4b5c6d")
INDEX = "ix_task_active_site_id_created_at_id"


def prepare(engine: Engine) -> None:
    db.upgrade(engine)
    with engine.begin() as connection:
        stored = connection.scalar(
            select(func.count()).select_from(models.Task).where(models.Task.site_id == SITE)
        )
        if stored == TASKS:
            return
        connection.execute(models.Task.__table__.delete().where(models.Task.site_id == SITE))
        provider = select(models.InfrastructureProvider.id).where(
            models.InfrastructureProvider.id == PROVIDER
        )
        if connection.scalar(provider) is None:
            connection.execute(
                insert(models.InfrastructureProvider).values(id=PROVIDER, org="initech", name="x")
            )
            connection.execute(
                insert(models.Site).values(
                    id=SITE,
                    name="old-tasks",
                    infrastructure_provider_id=PROVIDER,
                    flow_enabled=True,
                )
            )
        epoch = datetime(2025, 1, 1, tzinfo=UTC)
        for start in range(0, TASKS, 50_000):
            connection.execute(
                insert(models.Task),
                [
                    {
                        "id": uuid.uuid4(),
                        "site_id": SITE,
                        "status": "pending" if i < ACTIVE else "completed",
                        "created_at": epoch + timedelta(seconds=i),
                    }
                    for i in range(start, start + 50_000)
                ],
            )
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))


def best_ms(engine: Engine, runs: int = 20) -> float:
    page, count = queries.task_page(
        SITE, active_only=True, include_report=False, page_number=2, page_size=20
    )
    times = []
    with engine.connect() as connection:
        for _ in range(runs):
            started = time.perf_counter()
            rows = connection.execute(page).all()
            total = connection.execute(count).scalar_one()
            times.append((time.perf_counter() - started) * 1000)
            assert len(rows) == ACTIVE - 20 and total == ACTIVE
    return sorted(times)[len(times) // 2]


def main() -> int:
    lines = [
        f"Active tasks, page 2 of 20, at a site of {TASKS:,} finished and {ACTIVE} old pending "
        "tasks (median of 20, the page and the total):",
        "",
        "| backend | with the active-tasks index | without it |",
        "|---|---:|---:|",
    ]
    for backend in ("sqlite", "postgresql"):
        engine = create_engine(database_url(backend, f"active_{TASKS}"))
        prepare(engine)
        with_index = best_ms(engine)
        index = next(i for i in models.Task.__table__.indexes if i.name == INDEX)
        with engine.begin() as connection:
            index.drop(connection)
        try:
            without = best_ms(engine)
        finally:
            with engine.begin() as connection:
                index.create(connection)
        engine.dispose()
        lines.append(f"| {backend} | {with_index:.2f} ms | {without:.2f} ms |")
    publish("\n".join(lines) + "\n", datetime.now(UTC).strftime("%Y-%m-%dT%H%MZ"), "active")
    return 0


if __name__ == "__main__":
    sys.exit(main())
