"""Liveness and readiness probes, and the metrics."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import Response

from nico_api import metrics
from nico_api.web.runtime import Runtime
from nico_api.web.validation import RequestProblems, Step
from nico_api.wire import schemas


def get_health(problems: RequestProblems) -> schemas.Health:
    problems.check(Step.QUERY)
    return schemas.Health()


async def get_readiness(problems: RequestProblems, runtime: Runtime) -> schemas.Health:
    problems.check(Step.QUERY)
    # A database that does not answer raises a storage error: the 503 envelope.
    await runtime.store.ping()
    return schemas.Health()


def get_metrics(problems: RequestProblems, runtime: Runtime) -> Response:
    problems.check(Step.QUERY)
    # Switched off, or served on a port of their own: no such path here.
    if runtime.metrics is None or runtime.settings.metrics_port is not None:
        raise HTTPException(404)
    return Response(runtime.metrics.exposition(), media_type=metrics.CONTENT_TYPE)
