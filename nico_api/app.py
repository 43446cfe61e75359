"""The application factory: the spec, wired to handlers, security and the error envelope."""

from __future__ import annotations

import gc
import json
from typing import Any, ClassVar

import connexion
import yaml
from connexion.jsonifier import Jsonifier
from connexion.middleware import MiddlewarePosition
from connexion.options import SwaggerUIOptions
from connexion.resolver import Resolver
from connexion.utils import is_null, is_nullable
from connexion.validators import VALIDATOR_MAP, ParameterValidator
from connexion.validators.parameter import draft4_format_checker
from jsonschema import Draft4Validator
from jsonschema.exceptions import best_match
from pydantic import BaseModel
from starlette.convertors import PathConvertor, register_url_convertor

import handlers
from nico_api import auth, db, errors, logs
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


class _ParameterValidator(ParameterValidator):
    """Connexion's parameter checks, with each parameter's JSON Schema validator built once
    instead of being deep-copied and rebuilt on every request."""

    _validators: ClassVar[dict[int, tuple[dict[str, Any], Draft4Validator]]] = {}

    @staticmethod
    def validate_parameter(
        parameter_type: str, value: Any, param: dict[str, Any], param_name: str | None = None
    ) -> str | None:
        if value is None or (is_nullable(param) and is_null(value)):
            return ParameterValidator.validate_parameter(parameter_type, value, param, param_name)
        cached = _ParameterValidator._validators.get(id(param))
        if cached is None or cached[0] is not param:
            validator = Draft4Validator(
                param.get("schema", param), format_checker=draft4_format_checker
            )
            cached = _ParameterValidator._validators[id(param)] = (param, validator)
        error = best_match(cached[1].iter_errors(value))
        # Name the parameter and what is wrong with it, without the schema's internals.
        return None if error is None else f"{param['name']}: {error.message}"


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
        jsonifier=_APIJsonifier(json),
        security_map={"bearer": auth.BearerAuthentication},
        validator_map={**VALIDATOR_MAP, "parameter": _ParameterValidator},
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
    # The app's long-lived objects (spec, validators, routes) stay out of every later garbage
    # collection, which would otherwise walk them all and stall requests; and young
    # collections run less often, since each request allocates many short-lived objects.
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
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
