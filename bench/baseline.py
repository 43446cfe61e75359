"""The limit: Python doing the service's work for a task GET and nothing more, in a bare Starlette
app. The same token check, the same handler (production's checks in order), the same query and
translation, the same JSON; and the cheapest database access each backend allows: psycopg's
asynchronous connections on PostgreSQL (no worker-thread round trip; as many reads at once as
the pool has connections, with no deadline around them), and on SQLite the service's own read
on the event loop. NICO_LIMIT_DATABASE=thread reads in a worker thread instead, to measure what
the round trip costs."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nico_api import handlers
from nico_api.config import Settings
from nico_api.storage import queries
from nico_api.storage.db import LockedError
from nico_api.store import Lookup, Store, lookup_from_row
from nico_api.web.app import tune_process
from nico_api.web.runtime import Runtime
from nico_api.web.validation import RequestProblems
from nico_api.wire.errors import NICoError


class DirectLookup:
    """Store.lookup at its cheapest: the service's own read on the event loop (Storage.local
    on SQLite, Storage.pooled on PostgreSQL), without its turn and deadline; or, with
    NICO_LIMIT_DATABASE=thread, the read in a worker thread."""

    def __init__(self, store: Store, thread: bool) -> None:
        self.store = store
        self.thread = thread
        # As many reads at once as the pool has connections; the others wait their turn.
        self.turns = asyncio.Semaphore(store.storage.settings.db_capacity)

    async def lookup(
        self, org: str, site_id: uuid.UUID | None, task_id: uuid.UUID | None
    ) -> Lookup:
        params = {"org": org, "site_id": site_id, "task_id": task_id}
        storage = self.store.storage
        if self.thread:
            async with self.turns:
                return await asyncio.to_thread(self.store._lookup, params)
        if storage.local is not None:
            try:
                return lookup_from_row(storage.local.row(queries.PROVIDER_SITE_AND_TASK, params))
            except LockedError:
                return await asyncio.to_thread(self.store._lookup, params)
        assert storage.pooled is not None
        async with self.turns:
            row = await storage.pooled.row(queries.PROVIDER_SITE_AND_TASK, params)
        return lookup_from_row(row)


def _error(exc: NICoError) -> Response:
    body = {"source": "nico", "message": exc.message, "data": exc.data}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def create_app(settings: Settings | None = None) -> Starlette:
    runtime = Runtime.build(settings or Settings.from_env())
    thread = os.environ.get("NICO_LIMIT_DATABASE", "direct") == "thread"
    runtime = replace(runtime, store=DirectLookup(runtime.store, thread))  # type: ignore[arg-type]

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

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        yield
        await runtime.storage.close_reads()
        runtime.close()

    app = Starlette(
        routes=[
            Route("/v2/org/{org}/nico/task/{id}", get_task),
            Route("/healthz", health),
        ],
        lifespan=lifespan,
    )
    # The same process tuning as `nico-api serve`, for a fair comparison.
    tune_process()
    return app
