"""The operations that create tasks on trays: power control and firmware update, of one tray
or a batch, each with production's checks in production's order (docs/contract.md)."""

from __future__ import annotations

from typing import Any

from nico_api.handlers.checks import provider_admin, provider_and_site, submit
from nico_api.web.runtime import Runtime
from nico_api.web.validation import RequestProblems, check_body_read
from nico_api.wire import submissions
from nico_api.wire.schemas import TaskIds

Body = dict[str, Any]
# Production's tray handlers answer a Site id that is not a UUID as their Site lookup's DB error.
SITE_LOOKUP_FAILED = (500, "Failed to retrieve Site due to DB error")


async def power_control_tray(
    org: str, id_: str, token_info: Any, problems: RequestProblems, runtime: Runtime, body: Body
) -> TaskIds:
    found = await provider_and_site(runtime, provider_admin(org, token_info), body)
    check_body_read(problems)
    order = submissions.power(body, "Tray", id_, "Failed to validate power control request data")
    return await submit(runtime, found, order, SITE_LOOKUP_FAILED)


async def power_control_trays(
    org: str, token_info: Any, problems: RequestProblems, runtime: Runtime, body: Body
) -> TaskIds:
    # The batch operations read the body before membership and role.
    check_body_read(problems)
    order = submissions.power(body, "Tray", None, "Failed to validate request data")
    found = await provider_and_site(runtime, provider_admin(org, token_info), body)
    return await submit(runtime, found, order, SITE_LOOKUP_FAILED)


async def firmware_update_tray(
    org: str, id_: str, token_info: Any, problems: RequestProblems, runtime: Runtime, body: Body
) -> TaskIds:
    found = await provider_and_site(runtime, provider_admin(org, token_info), body)
    check_body_read(problems)
    order = submissions.firmware(
        body, "Tray", id_, "Failed to validate firmware update request data"
    )
    return await submit(runtime, found, order, SITE_LOOKUP_FAILED)


async def firmware_update_trays(
    org: str, token_info: Any, problems: RequestProblems, runtime: Runtime, body: Body
) -> TaskIds:
    check_body_read(problems)
    order = submissions.firmware(body, "Tray", None, "Failed to validate request data")
    found = await provider_and_site(runtime, provider_admin(org, token_info), body)
    return await submit(runtime, found, order, SITE_LOOKUP_FAILED)
