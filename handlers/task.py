"""The Task resource: retrieve one task, or list a site's tasks; the contract's checks in the
contract's order."""

from __future__ import annotations

import uuid
from typing import Any, NamedTuple

from sqlalchemy import Row

from nico_api import db, queries, schemas
from nico_api.errors import NICoError
from nico_api.models import utcnow
from nico_api.schemas import UUID_TEXT

Page = tuple[schemas.TaskList, int, dict[str, str]]


async def get_task(org: str, id_: str, site_id: str, token_info: dict[str, Any]) -> schemas.Task:
    return schemas.Task.from_record(await _task_at_site(org, id_, site_id, token_info))


# The deprecated backward-compatible path serves the same operation.
get_rack_task = get_task


async def cancel_task(
    org: str, id_: str, body: dict[str, Any], token_info: dict[str, Any]
) -> tuple[schemas.Task, int]:
    found = await _task_at_site(org, id_, body["siteId"], token_info)
    await db.run(db.execute, queries.CANCEL_TASK, {"task_id": found.id, "now": utcnow()})
    task = schemas.Task.from_record(await _provider_site_and_task(org, found.site_id, found.id))
    if task.status is not schemas.TaskStatus.TERMINATED:
        raise NICoError(409, f"Task cannot be cancelled: its status is {task.status.value}")
    return task, 202


cancel_rack_task = cancel_task


# Connexion passes the lists' query parameters, and its own context, as keywords.
async def get_all_task(org: str, site_id: str, token_info: dict[str, Any], **query: Any) -> Page:
    return await _page(org, site_id, token_info, Listing.of(query))


async def get_all_rack_task(
    org: str, id_: str, site_id: str, token_info: dict[str, Any], **query: Any
) -> Page:
    return await _page(org, site_id, token_info, Listing.of(query), rack_id=(id_, "Rack"))


async def get_all_tray_task(
    org: str, id_: str, site_id: str, token_info: dict[str, Any], **query: Any
) -> Page:
    return await _page(org, site_id, token_info, Listing.of(query), tray_id=(id_, "Tray"))


class Listing(NamedTuple):
    """The shared query parameters of the task lists (their defaults are in the spec)."""

    active_only: bool
    include_report: bool
    page_number: int
    page_size: int

    @classmethod
    def of(cls, query: dict[str, Any]) -> Listing:
        return cls(**{name: query[name] for name in cls._fields})


async def _page(
    org: str,
    site_id: str,
    token_info: dict[str, Any],
    listing: Listing,
    **component: tuple[str, str],
) -> Page:
    token_info["caller"].require_provider_admin(org)
    site = _uuid(site_id)
    found = await _provider_site_and_task(org, site, None)
    ids = {}
    for name, (text, kind) in component.items():
        ids[name] = _uuid(text)
        if ids[name] is None:
            raise NICoError(400, f"Invalid {kind} ID specified in URL")
    _check_site(found, site)
    rows, total = await db.run(db.fetch_page, *queries.task_page(site, **ids, **listing._asdict()))
    pagination = schemas.Pagination(
        page_number=listing.page_number, page_size=listing.page_size, total=total
    )
    tasks = schemas.TaskList([schemas.Task.from_record(row) for row in rows])
    return tasks, 200, {"X-Pagination": pagination.model_dump_json()}


async def _task_at_site(org: str, id_: str, site_id: str, token_info: dict[str, Any]) -> Row[Any]:
    """Contract rows 5-13: the caller, the org's provider, the ids, the site, the task."""
    token_info["caller"].require_provider_admin(org)
    task_id, site = _uuid(id_), _uuid(site_id)
    found = await _provider_site_and_task(org, site, task_id)
    if task_id is None:
        raise NICoError(400, "Invalid Task ID specified in URL")
    _check_site(found, site)
    if found.id is None:
        raise NICoError(404, "Task not found")
    return found


async def _provider_site_and_task(
    org: str, site: uuid.UUID | None, task_id: uuid.UUID | None
) -> Row[Any]:
    found = await db.run(
        db.fetch_one, queries.TASK_AT_SITE, {"org": org, "task_id": task_id, "site_id": site}
    )
    if found.provider_id is None:
        raise NICoError(400, "Failed to retrieve Infrastructure Provider for org")
    return found


def _check_site(found: Row[Any], site: uuid.UUID | None) -> None:
    if site is None:
        raise NICoError(400, "Failed to validate Site specified in request: invalid ID")
    if found.found_site_id is None:
        raise NICoError(400, "Site specified in request does not exist")
    if found.site_provider_id != found.provider_id:
        raise NICoError(403, "Site specified in request doesn't belong to current org's Provider")
    if not found.site_flow_enabled:
        raise NICoError(412, "Site does not have NICo Flow enabled")


def _uuid(value: str) -> uuid.UUID | None:
    return uuid.UUID(value) if UUID_TEXT.fullmatch(value) else None
