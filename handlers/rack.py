"""The operations that create tasks on racks: power control, firmware update and bring-up, of
one rack or a batch, each with production's checks in production's order (UPSTREAM.md 3.1)."""

from __future__ import annotations

from typing import Any

from handlers.task import check_site, provider_admin, provider_site_and_task
from nico_api import submissions
from nico_api.runtime import Runtime
from nico_api.schemas import TaskIds
from nico_api.submissions import Order
from nico_api.validation import RequestProblems, check_body_read

Body = dict[str, Any]


async def power_control_rack(
    org: str, id_: str, token_info: Any, problems: RequestProblems, runtime: Runtime, body: Body
) -> TaskIds:
    org = provider_admin(org, token_info)
    check_body_read(problems)
    order = submissions.power(body, "Rack", id_, "Failed to validate power control request data")
    return await _submit(runtime, org, order)


async def power_control_racks(
    org: str, token_info: Any, problems: RequestProblems, runtime: Runtime, body: Body
) -> TaskIds:
    # The batch operations read the body before membership and role.
    check_body_read(problems)
    order = submissions.power(body, "Rack", None, "Failed to validate request data")
    return await _submit(runtime, provider_admin(org, token_info), order)


async def firmware_update_rack(
    org: str, id_: str, token_info: Any, problems: RequestProblems, runtime: Runtime, body: Body
) -> TaskIds:
    org = provider_admin(org, token_info)
    check_body_read(problems)
    order = submissions.firmware(
        body, "Rack", id_, "Failed to validate firmware update request data"
    )
    return await _submit(runtime, org, order)


async def firmware_update_racks(
    org: str, token_info: Any, problems: RequestProblems, runtime: Runtime, body: Body
) -> TaskIds:
    check_body_read(problems)
    order = submissions.firmware(body, "Rack", None, "Failed to validate request data")
    return await _submit(runtime, provider_admin(org, token_info), order)


async def bringup_rack(
    org: str, id_: str, token_info: Any, problems: RequestProblems, runtime: Runtime, body: Body
) -> TaskIds:
    org = provider_admin(org, token_info)
    check_body_read(problems)
    order = submissions.bring_up(body, id_, "Failed to validate bring up request data")
    return await _submit(runtime, org, order)


async def bringup_racks(
    org: str, token_info: Any, problems: RequestProblems, runtime: Runtime, body: Body
) -> TaskIds:
    check_body_read(problems)
    order = submissions.bring_up(body, None, "Failed to validate request data")
    return await _submit(runtime, provider_admin(org, token_info), order)


async def _submit(runtime: Runtime, org: str, order: Order) -> TaskIds:
    """The org's provider and the Site checked (not whether it runs Flow), then Flow asked."""
    found = await provider_site_and_task(runtime.store, org, order.site_id, None)
    site = check_site(found, order.site_id, flow_enabled=False)
    return TaskIds(task_ids=await runtime.store.submit(order, site))
