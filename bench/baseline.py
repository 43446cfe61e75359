"""The baseline: a bare Starlette app doing the same work as the service for a task GET (the
same token verification, the same handler and query, the same JSON) without Connexion."""

from __future__ import annotations

import gc

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import handlers
from nico_api import auth, db
from nico_api.config import Settings
from nico_api.errors import NICoError


def _error(exc: NICoError) -> Response:
    body = {"source": "nico", "message": exc.message, "data": exc.data}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def get_task(request: Request) -> Response:
    try:
        caller = await auth._authenticator.authenticate(request.headers.get("authorization"))
        query = request.query_params
        if set(query) - {"siteId"} or "siteId" not in query:
            raise NICoError(400, "siteId is required and the only query parameter")
        task = await handlers.get_task(
            request.path_params["org"],
            request.path_params["id"],
            query["siteId"],
            {"sub": caller.subject, "caller": caller},
        )
    except NICoError as exc:
        return _error(exc)
    return Response(task.model_dump_json() + "\n", media_type="application/json")


async def health(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app() -> Starlette:
    settings = Settings.from_env()
    db.connect(settings)
    auth.configure(auth.Authenticator(auth.auth_config_for(settings)))
    # The same process tuning as the service (nico_api.app.create_app), for a fair comparison.
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    return Starlette(
        routes=[
            Route("/v2/org/{org}/nico/task/{id}", get_task),
            Route("/healthz", health),
        ]
    )
