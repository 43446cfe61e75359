"""The application factory: the spec, wired to handlers, security and the error envelope."""

from __future__ import annotations

import json
from typing import Any

import connexion
import yaml
from connexion.jsonifier import JSONEncoder, Jsonifier
from connexion.middleware import MiddlewarePosition
from connexion.options import SwaggerUIOptions
from connexion.resolver import Resolver
from pydantic import BaseModel
from starlette.convertors import PathConvertor, register_url_convertor

import handlers
from nico_api import auth, db, errors, logs
from nico_api.config import SPEC_PATH, Settings


class _APIEncoder(JSONEncoder):
    """Handlers return pydantic models; they know their own wire form."""

    def default(self, o: Any) -> Any:
        if isinstance(o, BaseModel):
            return o.model_dump(mode="json")
        return super().default(o)


class _AnyTextPath(PathConvertor):
    """Starlette's `path` convertor, but across newlines too: Connexion mounts the API under a
    `{path:path}` route, and a path parameter holding a newline must reach the API, not 404."""

    regex = "(?s:.*)"


def _handler_for(operation_id: str) -> Any:
    return getattr(handlers, operation_id.replace("-", "_"))


def create_app(settings: Settings | None = None) -> connexion.AsyncApp:
    settings = settings or Settings.from_env()
    register_url_convertor("path", _AnyTextPath())
    db.connect(settings)
    auth.configure(auth.Authenticator(auth.auth_config_for(settings)))
    app = connexion.AsyncApp(
        __name__,
        specification_dir=SPEC_PATH.parent,
        jsonifier=Jsonifier(json, cls=_APIEncoder),
        security_map={"bearer": auth.BearerAuthentication},
        # The spec itself is an operation (get-openapi); the UI reads it from there.
        swagger_ui_options=SwaggerUIOptions(
            serve_spec=False, spec_path="/v2/openapi.yaml", swagger_ui_path="/v2/docs"
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
