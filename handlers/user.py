"""Retrieve the current User: remembered on first call, kept up to date with the token's claims."""

from __future__ import annotations

from typing import Any

from nico_api.auth.authenticator import Caller
from nico_api.web.runtime import Runtime
from nico_api.web.validation import RequestProblems, Step
from nico_api.wire import schemas


async def get_user(
    org: str, token_info: dict[str, Any], problems: RequestProblems, runtime: Runtime
) -> schemas.User:
    problems.check(Step.QUERY)
    caller: Caller = token_info["caller"]
    caller.require_member(org.lower())
    return await runtime.store.remember_user(caller)
