"""Liveness and readiness probes."""

from __future__ import annotations

from nico_api import schemas
from nico_api.runtime import Runtime
from nico_api.validation import RequestProblems, Step


def get_health(problems: RequestProblems) -> schemas.Health:
    problems.check(Step.QUERY)
    return schemas.Health()


async def get_readiness(problems: RequestProblems, runtime: Runtime) -> schemas.Health:
    problems.check(Step.QUERY)
    # A database that does not answer raises a storage error: the 503 envelope.
    await runtime.store.ping()
    return schemas.Health()
