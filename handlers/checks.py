"""The steps of production's check lists that several operations share: the caller's
membership and role, the org's provider, the Site; and asking Flow for the tasks an operation
creates once its checks pass."""

from __future__ import annotations

import uuid
from typing import Any

from nico_api.store import Lookup, Store
from nico_api.web.runtime import Runtime
from nico_api.wire.errors import NICoError
from nico_api.wire.schemas import UUID_TEXT, TaskIds
from nico_api.wire.submissions import Order

INVALID_SITE_ID = (400, "Failed to validate Site specified in request: invalid ID")


def provider_admin(org: str, token_info: dict[str, Any]) -> str:
    """Membership, then the Provider Admin role, in the org as production names it: lower-cased."""
    org = org.lower()
    token_info["caller"].require_provider_admin(org)
    return org


async def provider_site_and_task(store: Store, org: str, site_id: Any, task_id: Any) -> Lookup:
    """The org's provider, the site and the task, read in one round trip; the provider checked."""
    found = await store.lookup(org, as_uuid(site_id), as_uuid(task_id))
    if found.provider_id is None:
        raise NICoError(400, "Failed to retrieve Infrastructure Provider for org")
    return found


def check_site(
    found: Lookup,
    site_id: Any,
    flow_enabled: bool = True,
    invalid: tuple[int, str] = INVALID_SITE_ID,
) -> uuid.UUID:
    """The Site's checks; its id once they pass. The operations that create tasks do not check
    for Flow, and the tray ones answer a Site id that is not a UUID as a database error."""
    if as_uuid(site_id) is None:
        raise NICoError(*invalid)
    if found.site is None:
        raise NICoError(400, "Site specified in request does not exist")
    if found.site.infrastructure_provider_id != found.provider_id:
        raise NICoError(403, "Site specified in request doesn't belong to current org's Provider")
    if flow_enabled and not found.site.flow_enabled:
        raise NICoError(412, "Site does not have NICo Flow enabled")
    return found.site.id


async def provider_and_site(runtime: Runtime, org: str, body: Any) -> Lookup:
    """The org's provider (checked) and the body's Site, read in one round trip."""
    site_id = body.get("siteId") if isinstance(body, dict) else None
    return await provider_site_and_task(runtime.store, org, site_id, None)


async def submit(
    runtime: Runtime, found: Lookup, order: Order, invalid: tuple[int, str] = INVALID_SITE_ID
) -> TaskIds:
    """The Site checked (not whether it runs Flow), then Flow asked."""
    site = check_site(found, order.site_id, flow_enabled=False, invalid=invalid)
    return TaskIds(task_ids=await runtime.store.submit(order, site))


def as_uuid(value: Any) -> uuid.UUID | None:
    """An id in a form production's UUID parser takes, else None."""
    if isinstance(value, uuid.UUID):
        return value
    return uuid.UUID(value) if isinstance(value, str) and UUID_TEXT.fullmatch(value) else None
