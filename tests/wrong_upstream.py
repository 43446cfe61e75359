"""A deliberately wrong NICo server, for the proxy to catch: a task without its `message`, a
list whose X-Pagination total disagrees with its page, a 500 without the envelope, a 403
envelope from another source, an answer broken off after its head, and a small gzip answer
that inflates to 64 MiB. `/echo` answers with the request as it arrived, and sets a cookie
(and a 10 KB header when asked)."""

import gzip
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

SITE = "5518ae98-48f4-47c1-b4d3-7b3747fa4d0c"


def _task(task_id: str) -> dict[str, object]:
    return {
        "id": task_id,
        "status": "Pending",
        "description": "Power on rack R-15",
        "message": "Pending",
        "ruleId": None,
        "started": None,
        "finished": None,
        "created": "2026-11-02T10:00:00Z",
        "updated": "2026-11-02T10:00:00Z",
    }


async def task(request: Request) -> JSONResponse:
    dropped = _task(request.path_params["id"])
    del dropped["message"]
    return JSONResponse(dropped)


async def tasks(_request: Request) -> JSONResponse:
    # Two tasks on the first page of 20, yet a total of 5.
    page = [_task("754cc669-e823-40b4-89b8-fa639ed31f0a"), _task(SITE)]
    paging = '{"pageNumber":1,"pageSize":20,"total":5,"orderBy":null}'
    return JSONResponse(page, headers={"X-Pagination": paging})


async def cancel(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("upstream exploded", status_code=500)


async def user(_request: Request) -> JSONResponse:
    envelope = {"source": "gateway", "message": "Forbidden", "data": None}
    return JSONResponse(envelope, status_code=403)


async def broken_off(_request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'[{"id":'
        raise ConnectionResetError("the target went away mid-answer")

    return StreamingResponse(chunks(), media_type="application/json")


BOMB = gzip.compress(b"[" + b" " * (64 << 20) + b"]", mtime=0)


async def bomb(_request: Request) -> Response:
    paging = '{"pageNumber":1,"pageSize":20,"total":0,"orderBy":null}'
    headers = {"Content-Encoding": "gzip", "X-Pagination": paging}
    return Response(BOMB, media_type="application/json", headers=headers)


async def echo(request: Request) -> JSONResponse:
    seen = {
        "method": request.method,
        "raw_path": request.scope["raw_path"].decode("latin-1"),
        "query": request.scope["query_string"].decode("latin-1"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers.raw],
        "body": (await request.body()).decode("latin-1"),
    }
    headers = {"Set-Cookie": "session=kept-by-nobody; Path=/"}
    if "long-header" in request.query_params:
        headers["Link"] = "<https://example.com/" + "x" * 10_000 + ">"
    return JSONResponse(seen, headers=headers)


async def health(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[
        Route("/v2/org/{org}/nico/task/{id}", task),
        Route("/v2/org/{org}/nico/task", tasks),
        Route("/v2/org/{org}/nico/task/{id}/cancel", cancel, methods=["POST"]),
        Route("/v2/org/{org}/nico/user/current", user),
        Route("/v2/org/{org}/nico/rack/{id}/task", broken_off),
        Route("/v2/org/{org}/nico/tray/{id}/task", bomb),
        Route("/healthz", health),
        Route("/echo/{rest:path}", echo, methods=["GET", "POST"]),
    ]
)
