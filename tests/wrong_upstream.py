"""A deliberately wrong NICo server, for the proxy to catch: a task without its `message`, a
list whose X-Pagination total disagrees with its page, a 500 without the envelope, and a 403
envelope from another source."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
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


async def health(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[
        Route("/v2/org/{org}/nico/task/{id}", task),
        Route("/v2/org/{org}/nico/task", tasks),
        Route("/v2/org/{org}/nico/task/{id}/cancel", cancel, methods=["POST"]),
        Route("/v2/org/{org}/nico/user/current", user),
        Route("/healthz", health),
    ]
)
