"""The operations that create tasks on racks: power control, firmware update and bring-up, of
one rack or a batch, each with production's checks in production's order (docs/contract.md)."""

from __future__ import annotations

from typing import Any

from nico_api.handlers.checks import provider_admin, provider_and_site, submit
from nico_api.web.runtime import Runtime
from nico_api.web.validation import RequestProblems, check_body_read
from nico_api.wire import submissions
from nico_api.wire.schemas import TaskIds

Body = dict[str, Any]


async def power_control_rack(
    org: str, id_: str, token_info: Any, problems: RequestProblems, runtime: Runtime, body: Body
) -> TaskIds:
    found = await provider_and_site(runtime, provider_admin(org, token_info), body)
    check_body_read(problems)
    order = submissions.power(body, "Rack", id_, "Failed to validate power control request data")
    return await submit(runtime, found, order)


async def power_control_racks(
    org: str, token_info: Any, problems: RequestProblems, runtime: Runtime, body: Body
) -> TaskIds:
    # The batch operations read the body before membership and role.
    check_body_read(problems)
    order = submissions.power(body, "Rack", None, "Failed to validate request data")
    found = await provider_and_site(runtime, provider_admin(org, token_info), body)
    return await submit(runtime, found, order)


async def firmware_update_rack(
    org: str, id_: str, token_info: Any, problems: RequestProblems, runtime: Runtime, body: Body
) -> TaskIds:
    found = await provider_and_site(runtime, provider_admin(org, token_info), body)
    check_body_read(problems)
    order = submissions.firmware(
        body, "Rack", id_, "Failed to validate firmware update request data"
    )
    return await submit(runtime, found, order)


async def firmware_update_racks(
    org: str, token_info: Any, problems: RequestProblems, runtime: Runtime, body: Body
) -> TaskIds:
    check_body_read(problems)
    order = submissions.firmware(body, "Rack", None, "Failed to validate request data")
    found = await provider_and_site(runtime, provider_admin(org, token_info), body)
    return await submit(runtime, found, order)


async def bringup_rack(
    org: str, id_: str, token_info: Any, problems: RequestProblems, runtime: Runtime, body: Body
) -> TaskIds:
    found = await provider_and_site(runtime, provider_admin(org, token_info), body)
    check_body_read(problems)
    order = submissions.bring_up(body, id_, "Failed to validate bring up request data")
    return await submit(runtime, found, order)


async def bringup_racks(
    org: str, token_info: Any, problems: RequestProblems, runtime: Runtime, body: Body
) -> TaskIds:
    check_body_read(problems)
    order = submissions.bring_up(body, None, "Failed to validate request data")
    found = await provider_and_site(runtime, provider_admin(org, token_info), body)
    return await submit(runtime, found, order)
