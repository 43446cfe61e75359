"""The OpenAPI document, as the server validates against it."""

from __future__ import annotations

from connexion import request
from starlette.responses import Response

from nico_api.config import SPEC_PATH
from nico_api.web.document import Document
from nico_api.web.validation import RequestProblems, Step

_DOCUMENT = Document.read(SPEC_PATH)


def get_openapi(problems: RequestProblems) -> Response:
    problems.check(Step.QUERY)
    body, media_type = _DOCUMENT.for_accept(request.headers.get("accept"))
    return Response(body, media_type=media_type, headers={"Vary": "Accept"})
