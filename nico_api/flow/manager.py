"""NICo Flow's task manager, as it behaves behind the REST API: a request's targets resolved to
racks, one task per rack, queued behind a rack's active task or scheduled at once; waiting tasks
promoted when their rack is free and ended when their queue time is up. What cannot be done is
answered with a FlowError: an outcome code and Flow's text, which the REST side maps.

Every write locks the racks it touches first, so that the server processes and the Flow process
see one rack's queue change in one order, on PostgreSQL and SQLite alike."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.orm import aliased

from nico_api import vocabulary
from nico_api.config import storable
from nico_api.flow import inventory
from nico_api.flow.operations import BY_NAME, Conflict, Submission, TrayFilter, conflict_of
from nico_api.flow.rules import CO, PS, SW, NoApplicableStepError, Rule
from nico_api.storage.models import (
    OperationRule,
    Rack,
    Task,
    TaskComponent,
    Tray,
    WorkflowRun,
    utcnow,
)
from nico_api.vocabulary import Code, FlowError

log = logging.getLogger("nico_api.flow")

# A task that Flow runs: one made through the API, with its plan (a fixture's is a snapshot).
RUNNABLE = Task.plan.is_not(None)


def submit(
    c: Connection, request: Submission, now: datetime, queue_timeout: float | None
) -> list[str]:
    """Flow's SubmitTask: the ids of the tasks made, one per rack. A rack with a conflicting
    active task queues the new one when `queue_timeout` is given, and refuses it otherwise; a
    rack that refuses is skipped, and a request that made no task fails."""
    if (request.trays or TrayFilter()).slot_id is not None:
        # Trays by slot are looked up before Flow is asked, and none is answered without it.
        components = _targets(c, request)
        if not components:
            return []
        rule = _rule(c, request)
    else:
        rule = _rule(c, request)
        components = _targets(c, request)
    if not components:
        raise FlowError(Code.UNKNOWN, "no valid racks found for request")
    targeted = {kind for by_type in components.values() for kind in by_type}
    try:
        rule.check_applies_to(targeted)
    except NoApplicableStepError as exc:
        raise FlowError(Code.FAILED_PRECONDITION, str(exc)) from None
    racks = sorted(components)
    lock_racks(c, racks)
    joined = _joined(c, request)
    if joined is not None:
        return joined
    if not storable(request.description):
        # Flow cannot store the task: each rack's creation fails, is logged and skipped.
        raise FlowError(Code.UNKNOWN, "failed to create any tasks")
    active, waiting = _queues(c, racks)
    tasks = []
    for rack_id in racks:
        task = _task(request, rule, rack_id, components[rack_id], now, queue_timeout)
        work = Work(conflict_of(request.operation), components[rack_id])
        if not any(work.conflicts_with(other) for other in active.get(rack_id, ())):
            task.update(
                _scheduled(rule.id, now),
                status="pending",
                message=vocabulary.PENDING_MESSAGE,
                queue_expires_at=None,
            )
        elif queue_timeout is None:
            log.info("flow: rack %s already has a conflicting task: rack conflict", rack_id)
            continue
        elif waiting.get(rack_id, 0) >= vocabulary.QUEUE_LIMIT:
            log.info(
                "flow: rack %s waiting queue is full (%d/%d tasks)",
                rack_id,
                waiting[rack_id],
                vocabulary.QUEUE_LIMIT,
            )
            continue
        tasks.append(task)
    if not tasks:
        raise FlowError(Code.UNKNOWN, "failed to create any tasks")
    # One statement for the tasks and one for their components, whatever the batch's size.
    c.execute(insert(Task), tasks)
    c.execute(
        insert(TaskComponent),
        [
            {"task_id": task["id"], "component_id": uuid.UUID(component)}
            for task in tasks
            for ids in task["attributes"]["components_by_type"].values()
            for component in ids
        ],
    )
    for task in tasks:
        log.info(
            "task submitted",
            extra={
                "fields": {
                    "task": str(task["id"]),
                    "rack": str(task["rack_id"]),
                    "operation": request.operation,
                    "status": task["status"],
                }
            },
        )
    made = [str(task["id"]) for task in tasks]
    _answered(c, request, made)
    return made


def answer_seen(c: Connection, site_id: uuid.UUID, workflow_id: str) -> tuple[str, ...]:
    """The tasks of the workflow's last committed answer (none yet: empty), read when an order
    is received, before it waits for any lock."""
    if not storable(workflow_id):
        return ()  # named after a target no database stores: there is no answer to find
    key = {"site_id": site_id, "workflow_id": workflow_id}
    ids = c.execute(select(WorkflowRun.task_ids).filter_by(**key)).scalar_one_or_none()
    return tuple(ids or ())


def _joined(c: Connection, request: Submission) -> list[str] | None:
    """The tasks of an identical order whose answer was committed after this one was received:
    the two were in flight together. Identical orders target the same racks, so the rack locks
    taken before this read order them, whichever process received each; each answer's tasks
    are new ids, so a changed answer is exactly a later one, whatever the clocks say."""
    if request.workflow_id is None or request.answer_seen is None:
        return None
    ids = answer_seen(c, request.site_id, request.workflow_id)
    if not ids or ids == request.answer_seen:
        return None
    log.info("flow: workflow %s in flight: joined", request.workflow_id)
    return list(ids)


def _answered(c: Connection, request: Submission, made: list[str]) -> None:
    """Record the workflow's run, answered now (committed with its tasks)."""
    if request.workflow_id is None:
        return
    key = {"site_id": request.site_id, "workflow_id": request.workflow_id}
    answer = {"finished_at": utcnow(), "task_ids": made}
    updated = c.execute(update(WorkflowRun).filter_by(**key).values(**answer)).rowcount
    if not updated:
        c.execute(insert(WorkflowRun).values(**key, **answer))


def _rule(c: Connection, request: Submission) -> Rule:
    """The rule named by the request (which must exist), else the Site's default for the
    operation, else Flow's built-in one."""
    rules = select(OperationRule.id, OperationRule.name, OperationRule.stages).where(
        OperationRule.site_id == request.site_id
    )
    if request.rule_id is not None:
        row = c.execute(rules.where(OperationRule.id == request.rule_id)).one_or_none()
        if row is None:
            raise FlowError(
                Code.NOT_FOUND,
                f"requested rule_id {request.rule_id}: rpc error: code = NotFound "
                "desc = operation rule not found",
            )
    else:
        row = c.execute(
            rules.where(
                OperationRule.operation == request.operation, OperationRule.is_default.is_(True)
            ).order_by(OperationRule.created, OperationRule.id)
        ).first()
    return BY_NAME[request.operation].rule if row is None else Rule.stored(*row)


def _targets(c: Connection, request: Submission) -> dict[uuid.UUID, dict[str, list[str]]]:
    """The targeted components of each rack, by component type."""
    trays = (
        select(Tray.rack_id, Tray.type, Tray.id)
        .join(Rack, Rack.id == Tray.rack_id)
        .where(Rack.site_id == request.site_id)
        .order_by(Tray.rack_id, Tray.slot, Tray.id)
    )
    wanted = request.trays or TrayFilter()
    site = request.site_id
    if request.tray is not None:
        rows = inventory.target_components(c, site, [request.tray])
    elif wanted.ids is not None:
        rows = inventory.target_components(c, site, wanted.ids, wanted.type)
    else:
        if request.rack is not None:
            rack_ids = [inventory.rack_by_external_id(c, site, request.rack)]
        elif request.rack_names is not None:
            rack_ids = inventory.racks_named(c, site, request.rack_names)
        elif wanted.rack_id is not None:
            rack_ids = [inventory.rack_by_external_id(c, site, wanted.rack_id)]
        elif wanted.rack_name is not None:
            rack_ids = inventory.racks_named(c, site, [wanted.rack_name])
        else:
            # No filter: every rack of the Site, as the spec says.
            rack_ids = list(c.scalars(select(Rack.id).where(Rack.site_id == site)))
        if wanted.type is not None:
            trays = trays.where(Tray.type == wanted.type)
        if wanted.slot_id is not None:
            trays = trays.where(Tray.slot == wanted.slot_id)
        rows = c.execute(trays.where(Tray.rack_id.in_(rack_ids))).all()
        empty = set(rack_ids) - {row.rack_id for row in rows}
        if empty and wanted.slot_id is None:
            raise FlowError(
                Code.UNKNOWN,
                "operation cannot be submitted: racks have no selected components: "
                + ", ".join(sorted(str(rack) for rack in empty)),
            )
    components: dict[uuid.UUID, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        # A tray named twice (by its id and its MAC address, say) is targeted once.
        if str(row.id) not in components[row.rack_id][row.type]:
            components[row.rack_id][row.type].append(str(row.id))
    return {rack: dict(by_type) for rack, by_type in components.items()}


def lock_racks(c: Connection, racks: list[uuid.UUID]) -> None:
    """Hold the racks until commit, always in id order: no two writers deadlock. The first
    statement writes, so that SQLite takes its one write lock before anything is read."""
    if c.dialect.name == "postgresql":
        c.execute(select(Rack.id).where(Rack.id.in_(racks)).order_by(Rack.id).with_for_update())
    else:
        c.execute(update(Rack).where(Rack.id.in_(racks)).values(updated=Rack.updated))


def _task(
    request: Submission,
    rule: Rule,
    rack_id: uuid.UUID,
    components: dict[str, list[str]],
    now: datetime,
    queue_timeout: float | None,
) -> dict[str, Any]:
    """A rack's new task as Flow stores it, queued until it is found free to run. Its plan is
    the rule's stages, and whether its steps report progress while they run."""
    operation = BY_NAME[request.operation]
    return {
        "id": uuid.uuid4(),
        "site_id": request.site_id,
        "rack_id": rack_id,
        "description": request.description,
        "type": operation.task_type,
        "information": {**request.information, "operation": request.operation},
        "attributes": {"components_by_type": components},
        "plan": {
            "rule_id": None if rule.id is None else str(rule.id),
            "stages": rule.as_plan(),
            "step_progress": operation.step_progress,
        },
        "status": "waiting",
        "message": vocabulary.QUEUED_MESSAGE,
        "applied_rule_id": None,
        "due_at": None,
        "queue_expires_at": None
        if queue_timeout is None
        else now + timedelta(seconds=queue_timeout),
        "created_at": now,
        "updated_at": now,
    }


def _queues(
    c: Connection, racks: list[uuid.UUID]
) -> tuple[dict[uuid.UUID, list[Work]], dict[uuid.UUID, int]]:
    """What runs on each rack now (its pending and running tasks), and how many wait."""
    active: dict[uuid.UUID, list[Work]] = defaultdict(list)
    waiting: dict[uuid.UUID, int] = defaultdict(int)
    rows = c.execute(
        select(Task.rack_id, Task.status, Task.information, Task.attributes).where(
            Task.rack_id.in_(racks), Task.status.in_(vocabulary.ACTIVE_STATUSES)
        )
    )
    for row in rows:
        if row.status == "waiting":
            waiting[row.rack_id] += 1
        else:
            active[row.rack_id].append(Work.of(row))
    return active, waiting


@dataclass(frozen=True)
class Work:
    """What a task does to its rack: its operation's conflict kind and the components it
    targets by type."""

    conflict: Conflict
    components: dict[str, list[str]]

    @classmethod
    def of(cls, row: Any) -> Work:
        operation = (row.information or {}).get("operation", "")
        return cls(conflict_of(operation), (row.attributes or {}).get("components_by_type", {}))

    def conflicts_with(self, other: Work) -> bool:
        """Flow's built-in conflict rule: exclusive work excludes everything; power work on
        power shelves excludes every power and firmware task on the rack; otherwise power and
        firmware work exclude each other where they touch the same components."""
        kinds = {self.conflict, other.conflict}
        if Conflict.EXCLUSIVE in kinds:
            return True
        # Neither is exclusive: the other is power or firmware work.
        if any(w.conflict == Conflict.POWER and w.components.get(PS) for w in (self, other)):
            return True
        types = (CO, SW) if Conflict.POWER in kinds else (CO, SW, PS)
        return any(
            set(self.components.get(t, ())) & set(other.components.get(t, ())) for t in types
        )


class RackPass(NamedTuple):
    """What one pass of the promoter over a rack did: the waiting tasks it ended as expired and
    those it scheduled."""

    expired: list[uuid.UUID]
    promoted: list[uuid.UUID]


def promote(c: Connection, rack_id: uuid.UUID, now: datetime) -> RackPass:
    """Flow's promoter on one rack: its waiting tasks past their queue time ended, then the
    others scheduled, oldest first, until one conflicts with what is active on the rack."""
    return promote_racks(c, [rack_id], now)[rack_id]


def promote_racks(
    c: Connection, rack_ids: list[uuid.UUID], now: datetime
) -> dict[uuid.UUID, RackPass]:
    """The promoter's pass over each of the racks, as `promote` does it, in a few statements
    for them all: a burst of tasks ending on many racks is not a burst of round trips."""
    racks = sorted(set(rack_ids))
    passes = {rack: RackPass([], []) for rack in racks}
    if not racks:
        return passes
    lock_racks(c, racks)
    for task, rack in expire(c, now, racks):
        passes[rack].expired.append(task)
    active = _queues(c, racks)[0]
    waiting = c.execute(
        select(Task.id, Task.rack_id, Task.plan, Task.information, Task.attributes)
        .where(Task.rack_id.in_(racks), Task.status == "waiting", RUNNABLE)
        .order_by(Task.created_at, Task.id)
    ).all()
    blocked: set[uuid.UUID] = set()
    for task in waiting:
        if task.rack_id in blocked:
            continue
        work = Work.of(task)
        if any(work.conflicts_with(other) for other in active[task.rack_id]):
            blocked.add(task.rack_id)
            continue
        c.execute(
            update(Task)
            .where(Task.id == task.id, Task.status == "waiting")
            .values(
                status="pending",
                message=vocabulary.PROMOTED_MESSAGE,
                queue_expires_at=None,
                updated_at=now,
                **_scheduled((task.plan or {}).get("rule_id"), now),
            )
        )
        active[task.rack_id].append(work)
        passes[task.rack_id].promoted.append(task.id)
    return passes


def racks_to_promote(c: Connection) -> list[uuid.UUID]:
    """Racks with a waiting task (whether they are free is checked under the rack's lock)."""
    waiting = select(Task.rack_id).where(Task.status == "waiting", RUNNABLE).distinct()
    return list(c.scalars(waiting))


def racks_freed_since(c: Connection, since: datetime) -> list[uuid.UUID]:
    """Racks with a waiting task on which a task has finished since `since`: the completions
    Flow's promoter is told of, whoever finished the task (a cancel, say)."""
    # From the few waiting tasks to each one's rack: no scan of every finished task.
    finished = aliased(Task)
    waiting = select(Task.rack_id).where(
        Task.status == "waiting",
        RUNNABLE,
        select(finished.id)
        .where(
            finished.rack_id == Task.rack_id,
            finished.status.in_(vocabulary.FINISHED_STATUSES),
            finished.finished_at >= since,
        )
        .exists(),
    )
    return list(c.scalars(waiting.distinct()))


def expire(
    c: Connection, now: datetime, racks: list[uuid.UUID] | None = None
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Waiting tasks whose queue time is up (on the racks given, or on all) end, as Flow's
    promoter ends them; each one's id and rack."""
    rack = [] if racks is None else [Task.rack_id.in_(racks)]
    ended = c.execute(
        update(Task)
        .where(Task.status == "waiting", Task.queue_expires_at <= now, *rack)
        .values(
            status="terminated",
            message=vocabulary.EXPIRED_MESSAGE,
            finished_at=now,
            updated_at=now,
            queue_expires_at=None,
        )
        .returning(Task.id, Task.rack_id)
    )
    return [(task, rack_of) for task, rack_of in ended]


def _scheduled(rule_id: Any, now: datetime) -> dict[str, Any]:
    """A task handed to the executor: its rule recorded, its first step due now."""
    return {"applied_rule_id": None if rule_id is None else uuid.UUID(str(rule_id)), "due_at": now}
