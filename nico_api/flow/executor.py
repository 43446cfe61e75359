"""The simulated NICo Flow: a process that runs the Site's tasks by writing to the same database
the REST API reads, as Flow does in production.

A task's execution is a numbered sequence of steps (nico_api.flow.report); each is written in one
transaction that moves the task's `progress` from n to n + 1 only if it is still n and the task
still runs. So a step is never written twice, a cancelled task is never written again, and a
process killed at any point continues every task from what is stored when it starts again."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import statistics
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Uuid, bindparam, func, make_url, or_, select, text, update
from sqlalchemy.exc import SQLAlchemyError

from nico_api import vocabulary
from nico_api.config import Settings
from nico_api.flow import manager, report
from nico_api.storage.db import Storage
from nico_api.storage.models import Rack, Task, Tray, utcnow

if TYPE_CHECKING:
    from nico_api.metrics import FlowMetrics

log = logging.getLogger("nico_api.flow")

# How many due steps one pass reads and writes, and how many one transaction writes.
BATCH = 500
STEPS_PER_COMMIT = 50
# How often racks freed by a task's end that this process did not write (a cancel) are looked
# at, as Flow's promoter is told of every end; the sweep of every rack has its own setting.
NOTICE_SECONDS = 1.0
# How far back a look for ended tasks reaches: an end committed just after the last look.
NOTICE_OVERLAP = timedelta(seconds=5)
# How many step lags are kept for the summary, of each kind.
LAGS_KEPT = 100_000
# How long to wait before trying a failing database again.
RETRY_SECONDS = 1.0


# A step's write, built once: the task moves from step n to n + 1 only if it is still at n and
# still runs. The start also records the execution plan and when the task started.
_WRITTEN = {
    name: bindparam(name)
    for name in ("progress", "updated_at", "status", "message", "report", "finished_at", "due_at")
}
ADVANCE = (
    update(Task)
    .where(
        Task.id == bindparam("task_id", type_=Uuid()),
        Task.progress == bindparam("step"),
        # Not an IN list: its expanding parameter cannot be sent with many rows at once.
        or_(*(Task.status == status for status in vocabulary.RUN_STATUSES)),
    )
    .values(**_WRITTEN)
)
START = ADVANCE.values(started_at=bindparam("started_at"), plan=bindparam("plan"))
# The targeted trays, their declared failures and their rack's.
TRAYS = (
    select(Tray.id, Tray.external_id, Tray.failure, Rack.failure.label("rack_failure"))
    .join(Rack, Rack.id == Tray.rack_id)
    .where(Tray.id.in_(bindparam("ids", expanding=True)))
)


class AlreadyRunningError(RuntimeError):
    """Another Flow process runs against the same database."""


class Executor:
    def __init__(
        self,
        storage: Storage,
        settings: Settings,
        metrics: FlowMetrics | None = None,
        lock: FlowLock | None = None,
    ) -> None:
        self.storage = storage
        self.settings = settings
        self.metrics = metrics
        # Under the Flow lock, every read and write goes through the connection that holds it.
        self._connection = storage.connection if lock is None else lock.connection
        # How late each step was written after it was due, in seconds, for the starts (due when
        # the task was scheduled, before its request committed) and for the steps after them.
        # The latest ones only: the process runs for days.
        self.lags: dict[str, deque[float]] = {
            kind: deque(maxlen=LAGS_KEPT) for kind in ("start", "step")
        }
        self.steps = 0

        # When the promoter next sweeps every rack and next looks at racks freed meanwhile, on
        # the monotonic clock; the first look sweeps, as Flow's promoter does when it starts.
        self._next_sweep = 0.0
        self._next_notice = 0.0
        self._noticed_since: datetime | None = None

    def run(self, stop: threading.Event) -> None:
        """Run due work until `stop` is set; a database that fails is tried again shortly."""
        while not stop.is_set():
            try:
                self.promoter(time.monotonic())
                while self.run_due() == BATCH and not stop.is_set():
                    pass
                wait = self._until_next_step()
            except SQLAlchemyError as exc:
                log.warning("database unavailable", extra={"fields": {"error": str(exc)[:200]}})
                wait = RETRY_SECONDS
            stop.wait(wait)

    def _until_next_step(self) -> float:
        """Seconds until the next step is due, at most a poll interval: a task created
        meanwhile is seen within the interval."""
        with self._connection() as c:
            due = c.scalar(
                select(func.min(Task.due_at)).where(Task.status.in_(vocabulary.RUN_STATUSES))
            )
        poll = self.settings.flow_poll_seconds
        if due is None:
            return poll
        return min(poll, max(0.0, (due - utcnow()).total_seconds()))

    def promoter(self, clock: float, now: datetime | None = None) -> None:
        """Flow's promoter, when `clock` (monotonic seconds) says it is due: every rack swept
        each NICO_FLOW_PROMOTER_SWEEP_SECONDS, and between sweeps the racks on which a task
        ended (a rack whose own task ends here is looked at as it ends, by run_due)."""
        now = now or utcnow()
        if clock >= self._next_sweep:
            self.sweep(now)
            self._next_sweep = clock + self.settings.flow_promoter_sweep_seconds
            self._next_notice = clock + NOTICE_SECONDS
            self._noticed_since = now
        elif clock >= self._next_notice:
            since = (self._noticed_since or now) - NOTICE_OVERLAP
            with self._connection() as c:
                racks = manager.racks_freed_since(c, since)
            self._promote(racks, now)
            self._next_notice = clock + NOTICE_SECONDS
            self._noticed_since = now

    def sweep(self, now: datetime | None = None) -> None:
        """The promoter's sweep: end waiting tasks whose queue time is up, and start the oldest
        waiting tasks of each rack, as far as nothing they conflict with runs there."""
        now = now or utcnow()
        with self._connection() as c, c.begin():
            expired = manager.expire(c, now)
        for task, rack in expired:
            _task_event("task ended", task, rack, status="terminated", reason="expired")
        with self._connection() as c:
            racks = manager.racks_to_promote(c)
        self._promote(racks, now)
        if self.metrics is not None:
            with self._connection() as c:
                counts = c.execute(
                    select(Task.status, func.count())
                    .where(Task.status.in_(vocabulary.ACTIVE_STATUSES))
                    .group_by(Task.status)
                ).all()
            self.metrics.holding(counts, vocabulary.ACTIVE_STATUSES)

    def _promote(self, racks: list[uuid.UUID], now: datetime) -> None:
        """The promoter's pass over the racks, BATCH racks to a transaction."""
        ordered = sorted(set(racks))
        for start in range(0, len(ordered), BATCH):
            with self._connection() as c, c.begin():
                done = manager.promote_racks(c, ordered[start : start + BATCH], now)
            for rack_id, rack_pass in done.items():
                for task in rack_pass.expired:
                    _task_event("task ended", task, rack_id, status="terminated", reason="expired")
                for task in rack_pass.promoted:
                    _task_event("task promoted", task, rack_id)

    def run_due(self, now: datetime | None = None) -> int:
        """Write every step due by `now` (at most BATCH); how many were due."""
        now = now or utcnow()
        with self._connection() as c:
            due = c.execute(
                select(
                    Task.id,
                    Task.rack_id,
                    Task.status,
                    Task.progress,
                    Task.plan,
                    Task.report,
                    Task.attributes,
                    Task.due_at,
                )
                .where(Task.due_at <= now, Task.status.in_(vocabulary.RUN_STATUSES))
                .order_by(Task.due_at, Task.id)
                .limit(BATCH)
            ).all()
        freed = set()
        # Steps are written a few dozen to a transaction: a burst of due steps is not a burst
        # of commits. A transaction lost to a crash writes none of its steps, so none twice.
        for start in range(0, len(due), STEPS_PER_COMMIT):
            rows = due[start : start + STEPS_PER_COMMIT]
            with self._connection() as c, c.begin():
                written = utcnow()
                outcomes = self._write_steps(c, rows, written)
            for row, (finished, outcome) in zip(rows, outcomes, strict=True):
                if finished is None:
                    continue  # cancelled, or written already
                _log_step(row, outcome)
                self.steps += 1
                kind = "start" if row.progress == 0 else "step"
                lag = (written - row.due_at).total_seconds()
                self.lags[kind].append(lag)
                if self.metrics is not None:
                    self.metrics.stepped(kind, lag)
                log.debug(
                    "step written", extra={"fields": {"task": str(row.id), "step": row.progress}}
                )
                if finished:
                    freed.add(row.rack_id)
        self._promote([rack for rack in freed if rack is not None], utcnow())
        return len(due)

    def _write_steps(
        self, c: Connection, rows: list[Any], now: datetime
    ) -> list[tuple[bool | None, report.Outcome | None]]:
        """Write each task's next step, in one statement for the starts and one for the others;
        for each, whether it finished the task (None: nothing written) and what the step did to
        the report (None for the start)."""
        starts = [row for row in rows if row.progress == 0]
        trays = self._trays(c, starts) if starts else {}
        planned = [self._next_step(row, now, trays) for row in rows]
        counts = 0
        for statement, first in ((START, True), (ADVANCE, False)):
            values = [v for v, _ in planned if (v["step"] == 0) is first]
            if values:
                counts += c.execute(statement, values).rowcount
        stored = None
        if counts != len(rows):
            # Some were not written (cancelled, or written already): those written here are the
            # ones now one step on, stamped with this transaction's time.
            read = select(Task.id, Task.progress, Task.updated_at)
            stored = {
                task: (progress, updated)
                for task, progress, updated in c.execute(
                    read.where(Task.id.in_([row.id for row in rows]))
                )
            }
        outcomes: list[tuple[bool | None, report.Outcome | None]] = []
        for row, (values, outcome) in zip(rows, planned, strict=True):
            if stored is not None and stored.get(row.id) != (row.progress + 1, now):
                outcomes.append((None, outcome))
                continue
            outcomes.append((values["status"] in vocabulary.FINISHED_STATUSES, outcome))
        return outcomes

    def _step(
        self, c: Connection, row: Any, now: datetime
    ) -> tuple[bool | None, report.Outcome | None]:
        """Write the task's next step alone (see _write_steps)."""
        return self._write_steps(c, [row], now)[0]

    def _next_step(
        self, row: Any, now: datetime, trays: dict[str, Any]
    ) -> tuple[dict[str, Any], report.Outcome | None]:
        """The values of the task's next step, and what the step did to the report (None for
        the start)."""
        step = row.progress
        values: dict[str, Any] = {
            "task_id": row.id,
            "step": step,
            "progress": step + 1,
            "updated_at": now,
            "status": "running",
            "message": vocabulary.RUNNING_MESSAGE,
            "finished_at": None,
        }
        outcome = None
        if step == 0:
            plan = self._expand(row, trays)
            # A rule applies to some targeted component (manager.submit): the report has work.
            values.update(started_at=now, plan=plan, report=report.initial(plan["stages"]))
        else:
            # A plan stored before it said otherwise runs as it was planned: with progress.
            progress = row.plan.get("step_progress", True)
            outcome = report.advance(row.report, row.plan["stages"], step, now, progress)
            values["report"] = outcome.report
            if outcome.status == "completed":
                values.update(status="completed", message=vocabulary.SUCCEEDED_MESSAGE)
            elif outcome.status == "failed":
                values.update(status="failed", message=outcome.error)
        if values["status"] in vocabulary.FINISHED_STATUSES:
            values.update(finished_at=now, due_at=None)
        else:
            values["due_at"] = now + timedelta(seconds=self.settings.flow_step_seconds)
        return values, outcome

    def _trays(self, c: Connection, rows: list[Any]) -> dict[str, Any]:
        """The trays the tasks target, by id, read in one statement."""
        ids = {
            uuid.UUID(i)
            for row in rows
            for kind in ((row.attributes or {}).get("components_by_type", {})).values()
            for i in kind
        }
        return {str(t.id): t for t in c.execute(TRAYS, {"ids": list(ids)})} if ids else {}

    def _expand(self, row: Any, known: dict[str, Any]) -> dict[str, Any]:
        """The task's rule with its targets: each step's components, and those that will fail
        (declared in the inventory, or drawn at the configured rate)."""
        by_type = (row.attributes or {}).get("components_by_type", {})
        trays = {i: known[i] for kind in by_type.values() for i in kind if i in known}
        rack_failure = next((t.rack_failure for t in trays.values()), None)
        rate, seed = self.settings.flow_failure_rate, self.settings.flow_seed
        stages = []
        for stage in (row.plan or {}).get("stages", []):
            steps = []
            for step in stage["steps"]:
                components = by_type.get(step["component_type"], [])
                failures = []
                for component in components:
                    tray = trays.get(component)
                    name = tray.external_id if tray else component
                    if tray is not None and tray.failure:
                        failures.append(f"{name}: {tray.failure}")
                    elif rate and random.Random(f"{seed}:{row.id}:{component}").random() < rate:
                        failures.append(f"{name}: simulated failure")
                steps.append({**step, "components": components, "failures": failures})
            stages.append({"number": stage["number"], "steps": steps})
        if rack_failure:
            first = next((s for st in stages for s in st["steps"] if s["components"]), None)
            if first is not None:
                first["failures"] = [rack_failure, *first["failures"]][: len(first["components"])]
        return {**(row.plan or {}), "stages": stages}

    def lag_summary(self) -> dict[str, float]:
        """Milliseconds between a step's due time and its write (p50, p99, max), for the
        starts and for the later steps."""
        summary: dict[str, float] = {"steps": self.steps}
        for kind, lags in self.lags.items():
            if lags:
                ordered = sorted(lags)
                summary[f"{kind}_p50_ms"] = 1000 * statistics.median(ordered)
                summary[f"{kind}_p99_ms"] = 1000 * ordered[int((len(ordered) - 1) * 0.99)]
                summary[f"{kind}_max_ms"] = 1000 * ordered[-1]
        return summary


def _task_event(event: str, task: Any, rack: Any, **fields: Any) -> None:
    """One JSON line for one event of a task's life, with the task and its rack."""
    log.info(event, extra={"fields": {"task": str(task), "rack": str(rack), **fields}})


def _log_step(row: Any, outcome: report.Outcome | None) -> None:
    """The events a written step is: the task's start, a stage begun or ended, the task's end."""
    if outcome is None:
        _task_event("task started", row.id, row.rack_id)
        return
    if outcome.event == "begun":
        _task_event("stage started", row.id, row.rack_id, stage=outcome.stage)
    elif outcome.event == "ended":
        stage = next(s for s in outcome.report["stages"] if s["number"] == outcome.stage)
        _task_event(
            "stage finished", row.id, row.rack_id, stage=outcome.stage, status=stage["status"]
        )
    if outcome.status is not None:
        fields = {"error": outcome.error} if outcome.error else {}
        _task_event("task ended", row.id, row.rack_id, status=outcome.status, **fields)


# The advisory lock's key on PostgreSQL: one Flow process per database.
ADVISORY_LOCK = 7218420311


class FlowLock:
    """The database's Flow lock, held while a Flow process runs, and the connections it works
    through: on SQLite the pool's (the lock is a file lock beside the database file); on
    PostgreSQL the one session that holds the advisory lock, so that no step is written once
    that session has ended, whoever ended it."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._held: Connection | None = None

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        if self.storage.engine.dialect.name != "postgresql":
            with self.storage.connection() as c:
                yield c
            return
        if self._held is None:
            self.take()
            log.warning("flow lock taken again")
        c = self._held
        assert c is not None
        try:
            yield c
        except SQLAlchemyError:
            if c.invalidated or c.closed:
                # The session ended (terminated, or the server restarted): so did the lock.
                self._held = None
                c.close()
                log.error(
                    "flow lock lost: the database session that held it ended; "
                    "no step is written until this process holds the lock again"
                )
            raise
        finally:
            if self._held is c and c.in_transaction():
                c.rollback()

    def take(self) -> None:
        """Take the advisory lock in a session of its own (AlreadyRunningError if another
        process holds it)."""
        c = self.storage.engine.connect()
        try:
            taken = c.scalar(text(f"SELECT pg_try_advisory_lock({ADVISORY_LOCK})"))
            c.commit()
        except BaseException:
            c.close()
            raise
        if not taken:
            c.invalidate()  # a session of its own: not one for the pool to hand out again
            log.error("another Flow process holds the flow lock: stopping")
            raise AlreadyRunningError("another Flow process runs against this database")
        self._held = c

    def release(self) -> None:
        if self._held is not None:
            # Ending the session releases its lock; a pooled session would keep it.
            self._held.invalidate()
            self._held = None


@contextlib.contextmanager
def only_flow_process(storage: Storage) -> Iterator[FlowLock]:
    """Hold the database's Flow lock while running: one Flow process per database. On SQLite
    the lock follows the database file, not the path it is named by: a lock file beside the
    file the path resolves to, through any symbolic links."""
    url = make_url(storage.settings.database_url)
    lock = FlowLock(storage)
    if url.get_backend_name() == "postgresql":
        lock.take()
        try:
            yield lock
        finally:
            lock.release()
        return
    if url.database in (None, "", ":memory:"):
        path = storage.settings.instance_dir / "memory.flow-lock"
    else:
        path = Path(f"{os.path.realpath(url.database)}.flow-lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunningError("another Flow process runs against this database") from None
        yield lock
