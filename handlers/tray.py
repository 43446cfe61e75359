"""The operations that create tasks on trays: power control and firmware update, of one tray
or a batch, each with production's checks in production's order (UPSTREAM.md 3.1)."""

from __future__ import annotations

from typing import Any

from handlers.task import check_site, provider_admin, provider_site_and_task
from nico_api import submissions
from nico_api.errors import NICoError
from nico_api.runtime import Runtime
from nico_api.schemas import TaskIds
from nico_api.submissions import Order
from nico_api.validation import RequestProblems, check_body_read

Body = dict[str, Any]


async def power_control_tray(
    org: str, id_: str, token_info: Any, problems: RequestProblems, runtime: Runtime, body: Body
) -> TaskIds:
    org = provider_admin(org, token_info)
    check_body_read(problems)
    order = submissions.power(body, "Tray", id_, "Failed to validate power control request data")
    return await _submit(runtime, org, order)


async def power_control_trays(
    org: str, token_info: Any, problems: RequestProblems, runtime: Runtime, body: Body
) -> TaskIds:
    # The batch operations read the body before membership and role.
    check_body_read(problems)
    order = submissions.power(body, "Tray", None, "Failed to validate request data")
    return await _submit(runtime, provider_admin(org, token_info), order)


async def firmware_update_tray(
    org: str, id_: str, token_info: Any, problems: RequestProblems, runtime: Runtime, body: Body
) -> TaskIds:
    org = provider_admin(org, token_info)
    check_body_read(problems)
    order = submissions.firmware(
        body, "Tray", id_, "Failed to validate firmware update request data"
    )
    return await _submit(runtime, org, order)


async def firmware_update_trays(
    org: str, token_info: Any, problems: RequestProblems, runtime: Runtime, body: Body
) -> TaskIds:
    check_body_read(problems)
    order = submissions.firmware(body, "Tray", None, "Failed to validate request data")
    return await _submit(runtime, provider_admin(org, token_info), order)


async def _submit(runtime: Runtime, org: str, order: Order) -> TaskIds:
    """The org's provider and the Site checked, a Site id that is not a UUID answered as the
    tray handlers' Site lookup answers it; then Flow asked."""
    found = await provider_site_and_task(runtime.store, org, order.site_id, None)
    site = check_site(
        found,
        order.site_id,
        flow_enabled=False,
        invalid=NICoError(500, "Failed to retrieve Site due to DB error"),
    )
    return TaskIds(task_ids=await runtime.store.submit(order, site))
