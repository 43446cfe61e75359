"""The baseline: a bare Starlette app doing the same work as the service for a task GET (the
same token verification, the same handler and query, the same JSON) without Connexion."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nico_api import handlers
from nico_api.app import tune_process
from nico_api.config import Settings
from nico_api.errors import NICoError
from nico_api.runtime import Runtime
from nico_api.validation import RequestProblems


def _error(exc: NICoError) -> Response:
    body = {"source": "nico", "message": exc.message, "data": exc.data}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def create_app() -> Starlette:
    runtime = Runtime.build(Settings.from_env())

    async def get_task(request: Request) -> Response:
        try:
            authorization = request.headers.get("authorization")
            caller = await runtime.authenticator.authenticate(authorization)
            query = request.query_params
            if set(query) - {"siteId"} or "siteId" not in query:
                raise NICoError(400, "siteId is required and the only query parameter")
            task = await handlers.get_task(
                request.path_params["org"],
                request.path_params["id"],
                {"sub": caller.subject, "caller": caller},
                RequestProblems(),
                runtime,
                query["siteId"],
            )
        except NICoError as exc:
            return _error(exc)
        return Response(task.model_dump_json() + "\n", media_type="application/json")

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    app = Starlette(
        routes=[
            Route("/v2/org/{org}/nico/task/{id}", get_task),
            Route("/healthz", health),
        ]
    )
    # The same process tuning as `nico-api serve`, for a fair comparison.
    tune_process()
    return app
