"""Every customisation of Connexion and Starlette, in one place.

Each goes through an extension point the framework documents where there is one: `jsonifier=`,
`security_map=`, `validator_map=`, `uri_parser_class=`, `middlewares=`, `lifespan=`,
`add_middleware`, `add_error_handler` (with the envelope's handlers, `errors.install`), the
request context handed to handlers, and the routing constant Connexion exports. Where none
exists (Starlette's process-wide path convertor), the reach into the framework is named here.
No private name of the frameworks is used; what relies on public-named but undocumented parts
is listed in docs/framework.md. Each has a test in tests/test_framework.py that fails if the
framework behaviour it relies on changes, so that an upgrade fails a test instead of changing
an answer silently.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import connexion
from connexion.apps.asynchronous import AsyncApi, AsyncASGIApp, AsyncOperation
from connexion.context import receive as context_receive
from connexion.context import scope as context_scope
from connexion.datastructures import MediaTypeDict
from connexion.decorators.parameter import (
    CONTEXT_NAME,
    pythonic,
    sanitized,
    unwrap_decorators,
)
from connexion.decorators.response import AsyncResponseDecorator
from connexion.frameworks.starlette import Starlette as StarletteFramework
from connexion.json_schema import Draft4RequestValidator
from connexion.jsonifier import Jsonifier
from connexion.lifecycle import ConnexionRequest
from connexion.middleware import MiddlewarePosition
from connexion.middleware.abstract import ROUTING_CONTEXT
from connexion.middleware.main import ConnexionMiddleware
from connexion.middleware.request_validation import (
    RequestValidationAPI,
    RequestValidationMiddleware,
    RequestValidationOperation,
)
from connexion.operations import AbstractOperation
from connexion.options import SwaggerUIOptions
from connexion.resolver import Resolver
from connexion.security import BearerSecurityHandler
from connexion.uri_parsing import OpenAPIURIParser
from connexion.utils import inspect_function_arguments, is_null, is_nullable, make_type
from connexion.validators import VALIDATOR_MAP, ParameterValidator
from connexion.validators.parameter import draft4_format_checker
from jsonschema import Draft4Validator
from jsonschema.exceptions import ValidationError, best_match
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.datastructures import Headers, QueryParams
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nico_api import handlers, logs
from nico_api.config import SPEC_PATH, spec_document
from nico_api.web import edge, validation
from nico_api.web.runtime import Runtime
from nico_api.web.validation import RequestProblems, Step
from nico_api.wire import errors
from nico_api.wire.errors import NICoError

log = logging.getLogger(__name__)

DOCS_PATH = "/v2/docs"
# The request context's keys; Connexion passes each to a handler that names it as a parameter.
RUNTIME = "runtime"
PROBLEMS = "problems"
# Set in the request context when a GET's body cannot be bound (validation.binds).
UNBOUND_BODY = "nico_unbound_body"
# The query's first values, read once by request validation for the handler's arguments.
QUERY_READ = "nico_query_read"


def build_app(runtime: Runtime) -> NICoApp:
    """The Connexion app serving openapi.yaml with the handlers, over `runtime`."""
    settings = runtime.settings
    app = NICoApp(
        runtime,
        lifespan=_closing(runtime),
        specification_dir=SPEC_PATH.parent,
        jsonifier=APIJsonifier(json),
        security_map={"bearer": BearerAuthentication},
        validator_map={
            **VALIDATOR_MAP,
            "parameter": NICoParameterValidator,
            "body": MediaTypeDict({"*/*json": NICoBodyValidator}),
        },
        uri_parser_class=GoURIParser,
        middlewares=[
            NICoRequestValidation if m is RequestValidationMiddleware else m
            for m in ConnexionMiddleware.default_middlewares
        ],
        # The spec itself is an operation (get-openapi); the UI reads it from there.
        swagger_ui_options=SwaggerUIOptions(
            serve_spec=False, spec_path="/v2/openapi.yaml", swagger_ui_path=DOCS_PATH
        ),
    )
    spec = spec_document()
    app.add_api(
        spec,
        resolver=Resolver(function_resolver=handler_for),
        strict_validation=True,
        validate_responses=settings.validate_responses,
        pythonic_params=True,
    )
    errors.install(app)
    if settings.cors_origins:
        # Outermost: preflights are answered before routing and security, and every answer
        # (errors included) carries the CORS headers.
        app.add_middleware(
            CORSMiddleware,
            position=MiddlewarePosition.BEFORE_EXCEPTION,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PATCH"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Pagination", "X-Request-ID", "Retry-After"],
            max_age=600,
        )
    app.add_middleware(NoSlashRedirect, position=MiddlewarePosition.BEFORE_ROUTING)
    app.add_middleware(
        logs.AccessLog,
        position=MiddlewarePosition.BEFORE_EXCEPTION,
        path_templates=logs.path_templates(spec),
        operation_of=operation_id,
        observe=runtime.metrics.request if runtime.metrics else None,
    )
    # Above the error handlers, so that every layer below (security included) finds it.
    app.add_middleware(
        ProvideRuntime, position=MiddlewarePosition.BEFORE_EXCEPTION, runtime=runtime
    )
    # Around the error handlers, inside the access log: it closes the connection after an answer
    # given before the body was read, and the log records what the client got.
    app.add_middleware(
        edge.BodyGuard,
        position=MiddlewarePosition.BEFORE_EXCEPTION,
        max_bytes=settings.max_body_bytes,
        timeout=settings.body_timeout,
    )
    return app


class NICoApp(connexion.AsyncApp):
    """Connexion's app, holding the runtime it serves over; its operations are decorated once
    (`_OnceDecoratedApp`)."""

    def __init__(self, runtime: Runtime, **options: Any) -> None:
        super().__init__(__name__, **options)
        self.runtime = runtime
        # The app that ConnexionMiddleware wraps (its `app`), chosen before any API is added.
        self.operations_app = self.middleware.app = _OnceDecoratedApp()


class _OnceDecorator:
    """Connexion's Starlette decorator, from its parts, building the decorated handler (its
    signature read, its parameter and response wrappers made) and the operation's URI parser
    once per operation, not on every request. What differs: no form is read (the spec's request
    bodies are JSON), and a body sent to an operation without one is never passed (request
    validation reads it as production binds it)."""

    framework = StarletteFramework

    def __init__(
        self, operation: AbstractOperation, *, pythonic_params: bool, jsonifier: Any
    ) -> None:
        self.operation = operation
        self.jsonifier = jsonifier
        self.sanitize = _pythonic if pythonic_params else sanitized

    @functools.cached_property
    def uri_parser(self) -> Any:
        operation = self.operation
        return operation.uri_parser_class(operation.parameters, operation.body_definition())

    def decorate(self, function: Any) -> Any:
        """The handler as Connexion's decorator wraps it: run on the event loop (or in a thread
        if it is a plain function), given its arguments, its answer made a response."""
        handler = function
        if not asyncio.iscoroutinefunction(function):

            @functools.wraps(function)
            async def handler(*args: Any, **kwargs: Any) -> Any:
                return await run_in_threadpool(function, *args, **kwargs)

        parameters = self.parameters(handler)
        return AsyncResponseDecorator(framework=self.framework, jsonifier=self.jsonifier)(
            parameters
        )

    def parameters(self, function: Any) -> Any:
        """Connexion's parameter decorator (`prep_kwargs`), with no form read and the spec's
        definitions read once (`ArgumentBinding`)."""
        operation = self.operation
        arguments, has_kwargs = inspect_function_arguments(unwrap_decorators(function))
        binding = ArgumentBinding(operation, arguments, has_kwargs, self.sanitize)
        # Connexion passes a body to an operation that defines one, and no other.
        takes_body = operation.is_request_body_defined

        @functools.wraps(function)
        async def wrapper(request: ConnexionRequest) -> Any:
            body = None
            if takes_body and binding.body_key(request.content_type) is not None:
                body = request.get_body()
                while asyncio.iscoroutine(body):
                    body = await body
            return await function(**binding.arguments(request, body))

        return wrapper

    def __call__(self, function: Any) -> Any:
        decorated = self.decorate(function)

        @functools.wraps(function)
        async def wrapper(*_args: Any, **_kwargs: Any) -> Any:
            request = self.framework.get_request(
                uri_parser=self.uri_parser, scope=context_scope, receive=context_receive
            )
            return await decorated(request)

        return wrapper


class ArgumentBinding:
    """What Connexion's `prep_kwargs` gives a handler (path, query and body arguments, then the
    request context's entries it names), with the operation's parameter definitions, query
    defaults and argument names worked out once rather than on every request."""

    def __init__(
        self,
        operation: AbstractOperation,
        arguments: list[str],
        has_kwargs: bool,
        sanitize: Callable[[str], str],
    ) -> None:
        self.operation = operation
        self.names = set(arguments)
        self.has_kwargs = has_kwargs
        self.sanitize = sanitize
        self.gives_context = CONTEXT_NAME in arguments
        parameters = operation.parameters
        self.path = {p["name"]: p for p in parameters if p["in"] == "path"}
        # Connexion's URI parser passes a string path parameter on as the router read it.
        self.plain_path = all(plain_string(p) for p in self.path.values())
        self.query = {p["name"]: p for p in parameters if p["in"] == "query"}
        self.query_schemas = {name: p.get("schema", {}) for name, p in self.query.items()}
        self.query_defaults = {
            name: default
            for name, p in self.query.items()
            if (default := p.get("default", p.get("schema", {}).get("default"))) is not None
        }

    def takes(self, key: str) -> bool:
        return self.has_kwargs or key in self.names

    def body_key(self, content_type: str) -> str | None:
        """The body's argument name, if the handler takes it."""
        key = self.sanitize(self.operation.body_name(content_type))
        return key if self.takes(key) else None

    def query_values(self, request: ConnexionRequest) -> dict[str, Any]:
        """The query as the URI parser resolves it, from the first values request validation
        read (GoURIParser: the first of repeated keys, read as Go reads it)."""
        raw = request.context.get(QUERY_READ)
        if raw is None:
            return request.query_params
        return validation.read_query({n: [t] for n, t in raw.items()}, self.query_schemas)

    def arguments(self, request: ConnexionRequest, body: Any) -> dict[str, Any]:
        sanitize = self.sanitize
        kwargs: dict[str, Any] = {}
        path = request.scope.get("path_params", {}) if self.plain_path else request.path_params
        for name, value in path.items():
            definition = self.path.get(name)
            kwargs[sanitize(name)] = value if definition is None else typed(value, definition)
        query = {**self.query_defaults, **self.query_values(request)}
        for name, value in query.items():
            key = sanitize(name)
            if self.takes(key) and name in self.query:
                kwargs[key] = typed(value, self.query[name])
        if self.operation.is_request_body_defined:
            content_type = request.mimetype
            key = self.body_key(content_type)
            if key is not None:
                schema = self.operation.body_schema(content_type)
                if is_nullable(schema) and is_null(body):
                    kwargs[key] = None
                else:
                    kwargs[key] = copy.deepcopy(schema.get("default", {})) if body is None else body
        context = request.context
        for key, value in context.items():
            if self.takes(key):
                kwargs[key] = value
        if self.gives_context:
            kwargs[CONTEXT_NAME] = context
        return kwargs


def plain_string(definition: dict[str, Any]) -> bool:
    """A parameter the URI parser leaves as it was read: a string that cannot be null."""
    schema = definition.get("schema", definition)
    return schema.get("type") == "string" and not is_nullable(schema)


def typed(value: Any, definition: dict[str, Any]) -> Any:
    """A parameter's value cast to its spec type, as Connexion casts it."""
    schema = definition.get("schema", definition)
    if is_nullable(schema) and is_null(value):
        return None
    if schema["type"] == "array":
        items = schema["items"]
        return [make_type(part, items["type"], items.get("format")) for part in value]
    return make_type(value, schema["type"], schema.get("format"))


# The spec's names and a client's query keys: a bounded memo, as clients choose the keys.
_pythonic = functools.lru_cache(maxsize=1024)(pythonic)


class _OnceDecoratedOperation(AsyncOperation):
    # The spec's operation and its handler, which Connexion's AsyncOperation keeps only the
    # handler of.
    spec: AbstractOperation

    def __init__(self, fn: Any, **options: Any) -> None:
        super().__init__(fn, **options)
        self.handler = fn

    @classmethod
    def from_operation(cls, operation: AbstractOperation, **options: Any) -> AsyncOperation:
        made = super().from_operation(operation, **options)
        made.spec = operation  # type: ignore[attr-defined]
        return made

    @functools.cached_property
    def fn(self) -> Any:  # type: ignore[override]
        decorator = _OnceDecorator(
            self.spec, pythonic_params=self.pythonic_params, jsonifier=self.jsonifier
        )
        return decorator(self.handler)


class _OnceDecoratedApi(AsyncApi):
    def make_operation(self, operation: Any) -> AsyncOperation:
        return _OnceDecoratedOperation.from_operation(
            operation, pythonic_params=self.pythonic_params, jsonifier=self.jsonifier
        )


class _OnceDecoratedApp(AsyncASGIApp):
    api_cls = _OnceDecoratedApi


def _closing(runtime: Runtime) -> Any:
    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        yield
        # The pools' connections are closed at shutdown; the engine opens new ones on demand.
        await runtime.storage.close_reads()
        runtime.close()

    return lifespan


def handler_for(operation_id: str) -> Any:
    """`get-task` is `handlers.get_task`."""
    return getattr(handlers, operation_id.replace("-", "_"))


# Where ProvideRuntime keeps the request's Connexion context for the layers below it: one
# lookup through Connexion's request per request, not one per read.
CONTEXT_KEY = "nico_api.context"


def request_context(scope: Scope) -> dict[str, Any]:
    """The request's Connexion context: what the handler is passed by name. Kept in the scope,
    it is there before Connexion's context middleware (security and validation run first)."""
    context = scope.get(CONTEXT_KEY)
    return ConnexionRequest(scope).context if context is None else context


def runtime_of(scope: Scope) -> Runtime:
    """The runtime of the app serving this request."""
    return request_context(scope)[RUNTIME]


def problems_of(scope: Scope) -> RequestProblems:
    return problems_in(request_context(scope))


def problems_in(context: dict[str, Any]) -> RequestProblems:
    problems = context.get(PROBLEMS)
    if problems is None:
        problems = context[PROBLEMS] = RequestProblems()
    return problems


def operation_id(scope: Scope) -> str | None:
    """The operationId routing chose for this request, read after the request is answered.
    Routing writes it into `scope["extensions"]`, a dict its scope copies share with ours."""
    return scope.get("extensions", {}).get(ROUTING_CONTEXT, {}).get("operation_id")


class ProvideRuntime:
    """Puts the app's runtime into each request's context, for security and the handlers; and
    the `extensions` dict routing writes into, so that the access log can read it back."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            context = scope[CONTEXT_KEY] = ConnexionRequest(scope).context
            context[RUNTIME] = self.runtime
        await self.app(scope, receive, send)


class APIJsonifier(Jsonifier):
    """Handlers return pydantic models, which write their own wire form (in Rust)."""

    def dumps(self, data: Any, **kwargs: Any) -> str:
        if isinstance(data, BaseModel):
            return data.model_dump_json() + "\n"
        return super().dumps(data, **kwargs)


class AnyTextPath(PathConvertor):
    """Starlette's `path` convertor, but across newlines too: Connexion mounts the API under a
    `{path:path}` route, and a path parameter holding a newline must reach the API, not 404."""

    regex = "(?s:.*)"


# Starlette keeps its convertors process-wide and compiles routes with them: there is no
# per-app extension point, so this is registered once, when the app's module is imported.
register_url_convertor("path", AnyTextPath())


class NoSlashRedirect:
    """No operation's path ends in a slash: such a path is a 404 envelope, where Starlette would
    redirect to a `Location` built from the request's own Host header. Swagger UI keeps its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        trailing_slash = scope["type"] == "http" and len(path) > 1 and path.endswith("/")
        if trailing_slash and not path.startswith(DOCS_PATH + "/"):
            raise HTTPException(404, "Not Found")
        await self.app(scope, receive, send)


class BearerAuthentication(BearerSecurityHandler):
    """Connexion's bearer scheme, given the raw header so that every answer is the contract's.
    Connexion reports the most specific of several failures by their `status_code`."""

    def get_fn(self, security_scheme: dict[str, Any], required_scopes: list[str]) -> Any:
        return _authenticate


async def _authenticate(request: ConnexionRequest) -> dict[str, Any]:
    caller = await runtime_of(request.scope).authenticator.authenticate(
        request.headers.get("Authorization")
    )
    # What Connexion passes to the handler as `token_info`.
    return {"sub": caller.subject, "caller": caller}


class GoURIParser(OpenAPIURIParser):
    """Query values as production reads them; one that cannot be read is left out."""

    def resolve_params(self, params: dict[str, Any], _in: str) -> dict[str, Any]:
        if _in != "query":
            return super().resolve_params(params, _in)
        return validation.read_query(params, self.param_schemas)


class NICoParameterValidator(ParameterValidator):
    """The spec's parameter checks, kept as production's errors for the handler's check list."""

    # Each parameter's JSON Schema validator, compiled once rather than on every request; a
    # memo of the specs loaded in this process, emptied should many apps' specs fill it.
    compiled_validators: ClassVar[dict[int, tuple[dict[str, Any], Draft4Validator]]] = {}
    MEMO_LIMIT = 4096

    def validate(self, scope: Scope) -> None:
        context = request_context(scope)
        raw: dict[str, str] = {}
        for name, text in QueryParams(scope.get("query_string", b"")).multi_items():
            raw.setdefault(name, text)  # Echo binds the first of repeated keys
        # What the handler's query arguments are read from (ArgumentBinding).
        context[QUERY_READ] = raw
        validation.check_query(
            self.parameters.get("query", []),
            raw,
            problems_in(context),
            self.first_error,
            body_bound=not context.get(UNBOUND_BODY),
        )
        # Path and header parameters are read by the router as they are: checked at once.
        path = scope.get("path_params", {})
        for param in self.parameters.get("path", []):
            if not plain_string(param):
                message = self.validate_path_parameter(
                    param, ConnexionRequest(scope, uri_parser=self.uri_parser)
                )
            else:
                message = self.validate_parameter("path", path.get(param["name"]), param)
            if message:
                raise NICoError(400, message)
        if header_params := self.parameters.get("header", []):
            headers = Headers(scope=scope)
            for param in header_params:
                if message := self.validate_parameter("header", headers.get(param["name"]), param):
                    raise NICoError(400, message)

    @classmethod
    def validate_parameter(  # type: ignore[override]
        cls, parameter_type: str, value: Any, param: dict[str, Any], param_name: Any = None
    ) -> str | None:
        """Connexion's check of one parameter, with its validator compiled once (Connexion's
        copies the parameter and compiles one on every request)."""
        if is_nullable(param) and is_null(value):
            return None
        if value is not None:
            # The first error, as Connexion's `validate` raises it.
            error = next(cls.compiled(param).iter_errors(value), None)
            return None if error is None else str(error)
        if param.get("required"):
            return f"Missing {parameter_type} parameter '{param['name']}'"
        return None

    @classmethod
    def first_error(cls, param: dict[str, Any], value: Any) -> ValidationError | None:
        return best_match(cls.compiled(param).iter_errors(value))

    @classmethod
    def compiled(cls, param: dict[str, Any]) -> Draft4Validator:
        """The parameter's JSON Schema validator, compiled once."""
        cached = cls.compiled_validators.get(id(param))
        if cached is None or cached[0] is not param:
            if len(cls.compiled_validators) >= cls.MEMO_LIMIT:
                cls.compiled_validators.clear()
            schema = param.get("schema", param)
            validator = Draft4Validator(schema, format_checker=draft4_format_checker)
            cached = cls.compiled_validators[id(param)] = (param, validator)
        return cached[1]


class NICoBodyValidator:
    """A JSON body read and validated as production reads it into the request's struct, its
    problems kept for the handler's body step; the handler is then given the body as Go binds it
    (validation.bound_body). A validator_map["body"] entry: Connexion makes one per request with
    these keyword arguments and calls `wrap_receive`."""

    def __init__(
        self, *, schema: dict[str, Any], encoding: str, nullable: bool = False, **_options: Any
    ) -> None:
        self.schema = schema
        self.encoding = encoding
        self.nullable = nullable

    async def wrap_receive(self, receive: Receive, *, scope: Scope) -> tuple[Receive, Scope]:
        problems = problems_of(scope)
        text = await _whole_body(receive)
        body = validation.parse_body(text, self.encoding, problems)
        # One that cannot be read: the handler is passed an empty object, which it never reads.
        body = {} if body is validation.UNREADABLE else validation.bound_body(body)
        unknown = validation.unknown_filter_keys(body, self.schema)
        if unknown:
            # Production ignores them, so the batch targets more than the client may think.
            log.warning(
                "batch filter keys ignored",
                extra={"fields": {"operation": operation_id(scope), "unknown_keys": unknown}},
            )
        if not (body is None and self.nullable):
            validator = Draft4RequestValidator(
                self.schema, format_checker=Draft4Validator.FORMAT_CHECKER
            )
            errors = list(validator.iter_errors(body))
            validation.keep_body_problems(body, errors, self.schema.get("required", []), problems)
        bound = json.dumps(body).encode(self.encoding)
        headers = [(n, v) for n, v in scope["headers"] if n != b"content-length"]
        headers.append((b"content-length", str(len(bound)).encode()))
        return _replaying(bound, receive), {**scope, "headers": headers}


class _ValidationOperation(RequestValidationOperation):
    """Connexion's request validation, with a body read first as production's binder reads it:
    an empty one binds nothing (an empty object is validated instead), nor does a form; any
    other must be `application/json` (a case-sensitive prefix), else `Failed to parse request
    data`. The JSON validator is then always given a JSON body with its length, chunked or not."""

    def __init__(self, next_app: ASGIApp, *, operation: AbstractOperation, **options: Any) -> None:
        super().__init__(next_app, operation=operation, **options)
        self.spec = operation

    def validate_mime_type(self, mime_type: str) -> None:
        """Decided in `__call__`, where the problem can be kept for the handler."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.spec.request_body:
            body = await _whole_body(receive)
            content_type = Headers(scope=scope).get("content-type", "")
            if body and not validation.json_typed(content_type):
                # A form binds nothing, then the empty request is validated; anything else fails.
                form = validation.form_typed(content_type) and validation.form_readable(body)
                if not form:
                    problems_of(scope).add(Step.BODY, NICoError(400, validation.PARSE_FAILED))
                body = b""
            replay = body or b"{}"
            headers = [
                (name, value)
                for name, value in scope["headers"]
                if name not in (b"content-type", b"content-length", b"transfer-encoding")
            ]
            headers += [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(replay)).encode()),
            ]
            scope = {**scope, "headers": headers}
            receive = _replaying(replay, receive)
        elif self.binds_query and _has_body(scope):
            # Production's handler binds the body after the query: one it cannot read fails
            # the bind (validation.check_query).
            body = await _whole_body(receive)
            content_type = Headers(scope=scope).get("content-type", "")
            if not validation.binds(body, content_type):
                request_context(scope)[UNBOUND_BODY] = True
            receive = _replaying(body, receive)
        await super().__call__(scope, receive, send)

    @functools.cached_property
    def binds_query(self) -> bool:
        """Whether production's handler binds a request (a GET of tasks: it has a query)."""
        return any(p["in"] == "query" for p in self.spec.parameters)


async def _whole_body(receive: Receive) -> bytes:
    """The request's body, read whole: its size is bounded by the edge's body limit."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if message["type"] != "http.request" or not message.get("more_body"):
            return body


def _has_body(scope: Scope) -> bool:
    """Whether the request's head announces a body (a length above 0, or chunks)."""
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip(b"0 ")):
            return True
    return False


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A receive channel that gives `body` once, then whatever the client sends next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class _ValidationAPI(RequestValidationAPI):
    def make_operation(self, operation: Any) -> RequestValidationOperation:
        return _ValidationOperation(
            self.next_app,
            operation=operation,
            strict_validation=self.strict_validation,
            validator_map=self.validator_map,
        )


class NICoRequestValidation(RequestValidationMiddleware):
    """Connexion's request validation middleware, with `_ValidationOperation` per operation."""

    api_cls = _ValidationAPI
