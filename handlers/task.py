"""Retrieve a Task: the contract's checks in the contract's order."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from nico_api import db, models, schemas
from nico_api.errors import NICoError
from nico_api.schemas import UUID_TEXT


def get_task(org: str, id_: str, site_id: str, token_info: dict[str, Any]) -> schemas.Task:
    token_info["caller"].require_provider_admin(org)
    with db.session() as session:
        provider = session.scalar(
            select(models.InfrastructureProvider).where(models.InfrastructureProvider.org == org)
        )
        if provider is None:
            raise NICoError(400, "Failed to retrieve Infrastructure Provider for org")
        task_id = _uuid(id_, "Invalid Task ID specified in URL")
        site = session.get(
            models.Site, _uuid(site_id, "Failed to validate Site specified in request: invalid ID")
        )
        if site is None:
            raise NICoError(400, "Site specified in request does not exist")
        if site.infrastructure_provider_id != provider.id:
            raise NICoError(
                403, "Site specified in request doesn't belong to current org's Provider"
            )
        if not site.flow_enabled:
            raise NICoError(412, "Site does not have NICo Flow enabled")
        task = session.scalar(
            select(models.Task).where(models.Task.id == task_id, models.Task.site_id == site.id)
        )
        if task is None:
            raise NICoError(404, "Task not found")
        return schemas.Task.from_record(task)


# The deprecated backward-compatible path serves the same operation.
get_rack_task = get_task


def _uuid(value: str, message: str) -> uuid.UUID:
    if not UUID_TEXT.fullmatch(value):
        raise NICoError(400, message)
    return uuid.UUID(value)
