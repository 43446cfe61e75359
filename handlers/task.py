"""Retrieve a Task: the contract's checks in the contract's order."""

from __future__ import annotations

import uuid
from typing import Any

from nico_api import db, queries, schemas
from nico_api.errors import NICoError
from nico_api.schemas import UUID_TEXT


async def get_task(org: str, id_: str, site_id: str, token_info: dict[str, Any]) -> schemas.Task:
    token_info["caller"].require_provider_admin(org)
    task_id, site = _uuid(id_), _uuid(site_id)
    found = await db.run(
        db.fetch_one, queries.TASK_AT_SITE, {"org": org, "task_id": task_id, "site_id": site}
    )
    if found.provider_id is None:
        raise NICoError(400, "Failed to retrieve Infrastructure Provider for org")
    if task_id is None:
        raise NICoError(400, "Invalid Task ID specified in URL")
    if site is None:
        raise NICoError(400, "Failed to validate Site specified in request: invalid ID")
    if found.found_site_id is None:
        raise NICoError(400, "Site specified in request does not exist")
    if found.site_provider_id != found.provider_id:
        raise NICoError(403, "Site specified in request doesn't belong to current org's Provider")
    if not found.site_flow_enabled:
        raise NICoError(412, "Site does not have NICo Flow enabled")
    if found.id is None:
        raise NICoError(404, "Task not found")
    return schemas.Task.from_record(found)


# The deprecated backward-compatible path serves the same operation.
get_rack_task = get_task


def _uuid(value: str) -> uuid.UUID | None:
    return uuid.UUID(value) if UUID_TEXT.fullmatch(value) else None
