"""A deliberately wrong implementation of the contract, to show the conformance check failing:
`started` is a number, and the liveness probe answers a status the spec does not have."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def task(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "id": request.path_params["id"],
            "status": "Running",
            "description": "",
            "message": "",
            "ruleId": None,
            "started": 1767225600,
            "finished": None,
            "created": "2026-11-02T09:00:00Z",
            "updated": "2026-11-02T09:00:00Z",
        }
    )


async def health(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"}, status_code=418)


app = Starlette(
    routes=[
        Route("/v2/org/{org}/nico/task/{id}", task),
        Route("/healthz", health),
    ]
)
