"""Benchmark data: one org's Flow site with N tasks (realistic text, ~2 KB multi-stage reports),
plus another org's site, loaded in bulk and reused while the row count matches."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, func, insert, select, text

from nico_api.storage import fixture, models
from nico_api.storage.db import Storage

ORG = "acme-inc"
OTHER_ORG = "globex"
SITE = uuid.UUID("5518ae98-48f4-47c1-b4d3-7b3747fa4d0c")
OTHER_SITE = uuid.UUID("b694576b-644a-438b-8594-d1d332d404b7")
BATCH = 5_000
STATUSES = ("pending", "waiting", "running", "completed", "failed", "terminated")
COMPONENTS = ("PowerShelf", "NVLSwitch", "Compute")
ACTIONS = ("Firmware update", "Power cycle", "Reimage", "Validate NVLink fabric", "Drain")


def report(rng: random.Random, started: datetime) -> dict:
    """A Flow v1 report of five stages of three steps: about 2 KB of JSON."""
    stages = []
    at = started
    for number in range(1, 6):
        steps = []
        for component in COMPONENTS:
            total = rng.randint(4, 72)
            done = rng.randint(0, total)
            steps.append(
                {
                    "component_type": component,
                    "status": "completed" if done == total else "running",
                    "total_components": total,
                    "completed_components": done,
                    "failed_components": total - done if number == 5 else 0,
                    "started_at": at.isoformat(),
                    "finished_at": (at + timedelta(minutes=4)).isoformat(),
                }
            )
        stages.append(
            {
                "number": number,
                "status": "completed",
                "started_at": at.isoformat(),
                "finished_at": (at + timedelta(minutes=5)).isoformat(),
                "steps": steps,
            }
        )
        at += timedelta(minutes=5)
    return {"version": 1, "stages": stages}


def tasks(count: int, seed: int = 7):
    rng = random.Random(seed)
    epoch = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(count):
        created = epoch + timedelta(seconds=i * 7)
        started = created + timedelta(seconds=3)
        yield {
            "id": uuid.UUID(int=rng.getrandbits(128), version=4),
            "site_id": SITE,
            "rack_id": uuid.UUID(int=rng.getrandbits(128), version=4),
            "description": f"{rng.choice(ACTIONS)} for rack R-{rng.randint(1, 400):03d} "
            f"in row {rng.choice('ABCDEFGH')}",
            "message": "",
            "status": rng.choice(STATUSES),
            "applied_rule_id": None,
            "report": report(rng, started),
            "created_at": created,
            "updated_at": started + timedelta(minutes=25),
            "started_at": started,
            "finished_at": None,
        }


def task_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return (
            connection.scalar(
                select(func.count()).select_from(models.Task).where(models.Task.site_id == SITE)
            )
            or 0
        )


def prepare(storage: Storage, count: int) -> None:
    engine = storage.engine
    storage.upgrade()
    demo = fixture.demo()  # both orgs, their providers and sites; the tasks are generated
    fixture.load(storage, fixture.FixtureFile(providers=demo.providers, sites=demo.sites))
    if task_count(engine) != count:
        _generate(engine, count)
    if engine.dialect.name == "postgresql":
        # Statistics for the planner, as autovacuum would gather after a bulk load.
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))


def _generate(engine: Engine, count: int) -> None:
    with engine.begin() as connection:
        connection.execute(models.Task.__table__.delete().where(models.Task.site_id == SITE))
        batch: list[dict] = []
        for row in tasks(count):
            batch.append(row)
            if len(batch) == BATCH:
                connection.execute(insert(models.Task), batch)
                batch = []
        if batch:
            connection.execute(insert(models.Task), batch)


def sample_ids(engine: Engine, how_many: int = 20_000) -> list[str]:
    """Ids of existing tasks, drawn at random from the whole table."""
    query = (
        select(models.Task.id)
        .where(models.Task.site_id == SITE)
        .order_by(func.random())
        .limit(how_many)
    )
    with engine.connect() as connection:
        return [str(task_id) for task_id in connection.scalars(query)]
