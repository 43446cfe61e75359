"""The request path's lookups: single Core statements, built once, run with bound values."""

from __future__ import annotations

from sqlalchemy import Text, Uuid, and_, bindparam, literal, select, type_coerce

from nico_api.models import InfrastructureProvider, Site, Task

_ORG = bindparam("org")
_SITE = bindparam("site_id", type_=Uuid())
_TASK = bindparam("task_id", type_=Uuid())
_ONE_ROW = select(literal(1).label("one")).subquery()

# Provider, site and task of a task GET in one round trip; each part is NULL when absent, so
# that the handler can answer the contract's checks in order.
# The report is read as it is stored, not decoded on the way: a stored report that is not
# JSON must drop out of the response (schemas.TaskReportV1.from_stored), not fail the row.
_TASK_COLUMNS = [
    type_coerce(column, Text).label(column.name) if column.name == "report" else column
    for column in Task.__table__.columns
]

TASK_AT_SITE = select(
    InfrastructureProvider.id.label("provider_id"),
    Site.id.label("found_site_id"),
    Site.infrastructure_provider_id.label("site_provider_id"),
    Site.flow_enabled.label("site_flow_enabled"),
    *_TASK_COLUMNS,
).select_from(
    _ONE_ROW.outerjoin(InfrastructureProvider, InfrastructureProvider.org == _ORG)
    .outerjoin(Site, Site.id == _SITE)
    .outerjoin(Task, and_(Task.id == _TASK, Task.site_id == _SITE))
)
