"""The request path's lookups: single Core statements, built once, run with bound values."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import (
    Select,
    Text,
    Uuid,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    type_coerce,
    union_all,
    update,
)

from nico_api.storage.models import (
    ACTIVE_TASK,
    InfrastructureProvider,
    Site,
    Task,
    TaskComponent,
    TaskCount,
)
from nico_api.vocabulary import CANCELLED_MESSAGE, CANCELLED_STATUS, FINISHED_STATUSES

_ORG = bindparam("org")
_SITE = bindparam("site_id", type_=Uuid())
_TASK = bindparam("task_id", type_=Uuid())
_ONE_ROW = select(literal(1).label("one")).subquery()

# Provider, site and task of a task GET in one round trip; each part is NULL when absent, so
# that the handler can answer the contract's checks in order.
# The report is read as it is stored, not decoded on the way: a stored report that is not
# JSON must drop out of the response (schemas.TaskReportV1.from_stored), not fail the row.
# What the API shows of a task, and its stored status: not Flow's execution state.
_SHOWN = (
    "id",
    "status",
    "description",
    "message",
    "applied_rule_id",
    "report",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
)
_TASK_COLUMNS = [
    type_coerce(column, Text).label(column.name) if column.name == "report" else column
    for column in Task.__table__.columns
    if column.name in _SHOWN
]

PROVIDER_SITE_AND_TASK = select(
    InfrastructureProvider.id.label("provider_id"),
    Site.id.label("site_record_id"),
    Site.infrastructure_provider_id.label("site_provider_id"),
    Site.flow_enabled.label("site_flow_enabled"),
    *_TASK_COLUMNS,
).select_from(
    _ONE_ROW.outerjoin(InfrastructureProvider, InfrastructureProvider.org == _ORG)
    .outerjoin(Site, Site.id == _SITE)
    .outerjoin(Task, and_(Task.id == _TASK, Task.site_id == _SITE))
)


def task_page(
    site_id: uuid.UUID,
    *,
    rack_id: uuid.UUID | None = None,
    tray_id: uuid.UUID | None = None,
    active_only: bool,
    include_report: bool,
    page_number: int,
    page_size: int,
) -> tuple[Select[Any], Select[Any]]:
    """A page of a site's tasks, newest first, and the size of the whole filtered set (read from
    the kept counts: counting a million rows per request would make the page cost grow)."""
    filters = [Task.site_id == site_id]
    counted = [TaskCount.site_id == site_id]
    if rack_id is not None:
        filters.append(Task.rack_id == rack_id)
        counted += [TaskCount.scope == "rack", TaskCount.scope_id == rack_id]
    elif tray_id is not None:
        targets = select(TaskComponent.task_id).where(TaskComponent.component_id == tray_id)
        filters.append(Task.id.in_(targets))
        counted += [TaskCount.scope == "component", TaskCount.scope_id == tray_id]
    else:
        counted += [TaskCount.scope == "site", TaskCount.scope_id == site_id]
    if active_only:
        filters.append(ACTIVE_TASK)
        counted.append(TaskCount.active.is_(True))
    columns = [c for c in _TASK_COLUMNS if include_report or c.name != "report"]
    page = (
        select(*columns)
        .where(*filters)
        .order_by(Task.created_at.desc(), Task.id.desc())
        .limit(page_size)
        .offset((page_number - 1) * page_size)
    )
    return page, select(func.coalesce(func.sum(TaskCount.tasks), 0)).where(*counted)


TASK_BY_ID = select(*_TASK_COLUMNS).where(Task.id == _TASK)

# Cancelling is one conditional update of a task that has not finished (Flow cancels `unknown`
# ones too), returning the cancelled task: of two concurrent cancels, one changes the task and
# the other finds it terminated.
CANCEL_TASK = (
    update(Task)
    .where(
        Task.id == bindparam("task_id", type_=Uuid()),
        Task.status.not_in(FINISHED_STATUSES),
    )
    .values(
        status=CANCELLED_STATUS,
        message=CANCELLED_MESSAGE,
        finished_at=bindparam("now"),
        updated_at=bindparam("now"),
        # Nothing more for the Flow executor to run, nor a queue for it to wait in.
        due_at=None,
        queue_expires_at=None,
    )
    .returning(*_TASK_COLUMNS)
)


def _counted(scope: str, scope_id: Any, *group: Any) -> Select[Any]:
    return select(Task.site_id, literal(scope), scope_id, ACTIVE_TASK, func.count()).group_by(
        Task.site_id, *group, ACTIVE_TASK
    )


# The list totals counted afresh from the stored tasks (`nico-api db recount`): for writes the
# triggers cannot see, such as SQLite's INSERT OR REPLACE.
RECOUNT = (
    delete(TaskCount),
    insert(TaskCount).from_select(
        ["site_id", "scope", "scope_id", "active", "tasks"],
        union_all(
            _counted("site", Task.site_id),
            _counted("rack", Task.rack_id, Task.rack_id).where(Task.rack_id.is_not(None)),
            _counted("component", TaskComponent.component_id, TaskComponent.component_id).join(
                TaskComponent, TaskComponent.task_id == Task.id
            ),
        ),
    ),
)
COUNTS = select(func.count()).select_from(TaskCount)
