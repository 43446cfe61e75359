"""The limit: Python doing the service's work for a task GET and nothing more, in a bare Starlette
app. The same token check, the same handler (production's checks in order), the same query and
translation, the same JSON; and the cheapest database access each backend allows: psycopg's
async connection pool on PostgreSQL (no worker-thread round trip), and on SQLite the direct call
on the event loop (in WAL mode a read never waits for a writer). NICO_LIMIT_DATABASE=thread
makes both use the service's worker thread instead, to measure what the round trip costs."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from psycopg.rows import namedtuple_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import make_url
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nico_api import handlers, queries
from nico_api.app import tune_process
from nico_api.config import Settings
from nico_api.errors import NICoError
from nico_api.runtime import Runtime
from nico_api.store import Lookup, Store, lookup_from_row
from nico_api.validation import RequestProblems


class DirectLookup:
    """Store.lookup without the worker thread: the same statement, read as directly as the
    backend allows."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.pool: AsyncConnectionPool | None = None
        engine = store.storage.engine
        if engine.dialect.name == "postgresql":
            compiled = queries.PROVIDER_SITE_AND_TASK.compile(dialect=engine.dialect)
            self.sql, self.fixed = str(compiled), dict(compiled.params)
            size = settings.db_pool_size + settings.db_max_overflow
            url = make_url(settings.database_url).set(drivername="postgresql")
            self.pool = AsyncConnectionPool(
                url.render_as_string(hide_password=False),
                min_size=size,
                max_size=size,
                open=False,
                kwargs={"autocommit": True, "row_factory": namedtuple_row},
            )

    async def lookup(
        self, org: str, site_id: uuid.UUID | None, task_id: uuid.UUID | None
    ) -> Lookup:
        if self.pool is None:
            return self.store._lookup(org, site_id, task_id)
        values = {**self.fixed, "org": org, "site_id": site_id, "task_id": task_id}
        async with self.pool.connection() as c:
            row = await (await c.execute(self.sql, values)).fetchone()
        return lookup_from_row(row)


def _error(exc: NICoError) -> Response:
    body = {"source": "nico", "message": exc.message, "data": exc.data}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def create_app(settings: Settings | None = None) -> Starlette:
    runtime = Runtime.build(settings or Settings.from_env())
    direct = None
    if os.environ.get("NICO_LIMIT_DATABASE", "direct") != "thread":
        direct = DirectLookup(runtime.store, runtime.settings)
        runtime = replace(runtime, store=direct)  # type: ignore[arg-type]

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
        if direct is not None and direct.pool is not None:
            await direct.pool.open(wait=True)
        yield
        if direct is not None and direct.pool is not None:
            await direct.pool.close()
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
