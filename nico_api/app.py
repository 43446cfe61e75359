"""The application factory: the spec, wired to handlers, security and the error envelope."""

from __future__ import annotations

import gc
import json
from typing import Any

import connexion
import yaml
from connexion.datastructures import MediaTypeDict
from connexion.jsonifier import Jsonifier
from connexion.middleware import MiddlewarePosition
from connexion.middleware.main import ConnexionMiddleware
from connexion.middleware.request_validation import RequestValidationMiddleware
from connexion.options import SwaggerUIOptions
from connexion.resolver import Resolver
from connexion.validators import VALIDATOR_MAP
from pydantic import BaseModel
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

import handlers
from nico_api import auth, db, edge, errors, logs, validation
from nico_api.config import SPEC_PATH, Settings


class _APIJsonifier(Jsonifier):
    """Handlers return pydantic models, which write their own wire form (in Rust)."""

    def dumps(self, data: Any, **kwargs: Any) -> str:
        if isinstance(data, BaseModel):
            return data.model_dump_json() + "\n"
        return super().dumps(data, **kwargs)


class _AnyTextPath(PathConvertor):
    """Starlette's `path` convertor, but across newlines too: Connexion mounts the API under a
    `{path:path}` route, and a path parameter holding a newline must reach the API, not 404."""

    regex = "(?s:.*)"


class _NoSlashRedirect:
    """No operation's path ends in a slash: such a path is a 404 envelope, where Starlette would
    redirect to a `Location` built from the request's own Host header. Swagger UI keeps its own."""

    def __init__(self, app: ASGIApp, docs_path: str) -> None:
        self.app = app
        self.docs_path = docs_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        trailing_slash = scope["type"] == "http" and len(path) > 1 and path.endswith("/")
        if trailing_slash and not path.startswith(self.docs_path + "/"):
            raise HTTPException(404, "Not Found")
        await self.app(scope, receive, send)


def _handler_for(operation_id: str) -> Any:
    return getattr(handlers, operation_id.replace("-", "_"))


DOCS_PATH = "/v2/docs"


def create_app(settings: Settings | None = None) -> connexion.AsyncApp:
    settings = settings or Settings.from_env()
    register_url_convertor("path", _AnyTextPath())
    db.connect(settings)
    auth.configure(auth.Authenticator(auth.auth_config_for(settings)))
    app = connexion.AsyncApp(
        __name__,
        specification_dir=SPEC_PATH.parent,
        jsonifier=_APIJsonifier(json),
        security_map={"bearer": auth.BearerAuthentication},
        validator_map={
            **VALIDATOR_MAP,
            "parameter": validation.NICoParameterValidator,
            "body": MediaTypeDict({"*/*json": validation.NICoBodyValidator}),
        },
        uri_parser_class=validation.GoURIParser,
        middlewares=[
            validation.NICoRequestValidation if m is RequestValidationMiddleware else m
            for m in ConnexionMiddleware.default_middlewares
        ],
        # The spec itself is an operation (get-openapi); the UI reads it from there.
        swagger_ui_options=SwaggerUIOptions(
            serve_spec=False, spec_path="/v2/openapi.yaml", swagger_ui_path=DOCS_PATH
        ),
    )
    app.add_api(
        SPEC_PATH.name,
        resolver=Resolver(function_resolver=_handler_for),
        strict_validation=True,
        validate_responses=settings.validate_responses,
        pythonic_params=True,
    )
    errors.install(app)
    # The app's long-lived objects (spec, validators, routes) stay out of every later garbage
    # collection, which would otherwise walk them all and stall requests; and young
    # collections run less often, since each request allocates many short-lived objects.
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    app.add_middleware(
        _NoSlashRedirect, position=MiddlewarePosition.BEFORE_ROUTING, docs_path=DOCS_PATH
    )
    app.add_middleware(
        edge.BodyLimit,
        position=MiddlewarePosition.BEFORE_ROUTING,
        max_bytes=settings.max_body_bytes,
    )
    app.add_middleware(
        logs.AccessLog,
        position=MiddlewarePosition.BEFORE_EXCEPTION,
        path_templates=_path_templates(),
    )
    return app


def _path_templates() -> dict[str, str]:
    """Each operationId's path template, for the access log."""
    spec = yaml.safe_load(SPEC_PATH.read_text())
    return {
        operation["operationId"]: path
        for path, item in spec["paths"].items()
        for operation in item.values()
        if isinstance(operation, dict) and "operationId" in operation
    }
