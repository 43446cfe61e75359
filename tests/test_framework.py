"""The Connexion and Starlette customisations (nico_api/web/framework.py), one test each: each fails
if the framework behaviour the customisation relies on changes in an upgrade."""

from __future__ import annotations

import ast
import functools
import inspect
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import connexion.middleware.exceptions
import pytest
import starlette.convertors
from connexion.middleware.main import ConnexionMiddleware
from connexion.middleware.request_validation import RequestValidationMiddleware
from starlette.testclient import TestClient

from nico_api import handlers
from nico_api.auth import authenticator as auth
from nico_api.config import Settings, SettingsError
from nico_api.storage.db import Storage
from nico_api.storage.models import Task
from nico_api.web import framework
from nico_api.web.app import create_app
from nico_api.web.framework import NICoApp
from nico_api.web.validation import PARSE_FAILED
from nico_api.wire import schemas
from nico_api.wire.errors import NICoError
from tests.demo import ACME, ACME_SITE, GLOBEX, RUNNING_TASK, task_path
from tests.fixtures import Bearer

LIST_PATH = f"/v2/org/{ACME}/nico/task"


def error(response) -> tuple[int, str]:
    return response.status_code, response.json()["message"]


def test_jsonifier_writes_pydantic_models_as_they_write_themselves(client: TestClient) -> None:
    # jsonifier=: a handler's model is written by pydantic, one line, as Go's encoder ends it.
    assert framework.APIJsonifier(json).dumps(schemas.Health()) == '{"status":"ok"}\n'
    assert client.get("/healthz").text == '{"status":"ok"}\n'


def test_path_convertor_lets_a_newline_reach_the_api(client: TestClient, bearer: Bearer) -> None:
    # Starlette's process-wide `path` convertor is ours: Connexion mounts the API under it.
    assert isinstance(starlette.convertors.CONVERTOR_TYPES["path"], framework.AnyTextPath)
    response = client.get(
        task_path(RUNNING_TASK + "%0A"), params={"siteId": ACME_SITE}, headers=bearer()
    )
    assert error(response) == (400, "Invalid Task ID specified in URL")


def test_no_redirect_for_a_trailing_slash(client: TestClient, bearer: Bearer) -> None:
    # add_middleware(BEFORE_ROUTING): Starlette's redirect never happens, the docs keep theirs.
    response = client.get(LIST_PATH + "/", headers=bearer(), follow_redirects=False)
    assert error(response) == (404, "Not Found")
    assert "location" not in response.headers
    assert client.get(framework.DOCS_PATH + "/", follow_redirects=False).status_code == 200


def test_two_apps_in_one_process_each_serve_their_own_runtime(
    app: NICoApp, settings: Settings, tmp_path: Path, bearer: Bearer
) -> None:
    # The request context carries each app's runtime to security and handlers; nothing global.
    empty = tmp_path / "empty.db"
    other = create_app(settings.model_copy(update={"database_url": f"sqlite:///{empty}"}))
    other.runtime.storage.upgrade()
    params = {"siteId": ACME_SITE}
    with app.test_client() as first, other.test_client() as second:
        assert (
            first.get(task_path(RUNNING_TASK), params=params, headers=bearer()).status_code == 200
        )
        response = second.get(task_path(RUNNING_TASK), params=params, headers=bearer())
        assert (
            first.get(task_path(RUNNING_TASK), params=params, headers=bearer()).status_code == 200
        )
    assert error(response) == (400, "Failed to retrieve Infrastructure Provider for org")
    assert other.runtime.storage is not app.runtime.storage


def test_the_request_context_is_connexions() -> None:
    # request_context reads the dict Connexion's request keeps (and passes handlers) by itself.
    from connexion.lifecycle import ConnexionRequest

    scope = {"type": "http", "headers": []}
    context = framework.request_context(scope)
    assert context is ConnexionRequest(scope).context
    fresh = {"type": "http", "headers": []}
    assert ConnexionRequest(fresh).context is framework.request_context(fresh)


def test_handlers_are_passed_the_request_context_by_name() -> None:
    # Connexion passes a context key to a handler that names it; every handler names `problems`,
    # and every one that reads storage names `runtime`.
    for name in handlers.__all__:
        parameters = inspect.signature(getattr(handlers, name)).parameters
        assert framework.PROBLEMS in parameters, name
        if name not in ("get_health", "get_openapi"):
            assert framework.RUNTIME in parameters, name


@pytest.mark.parametrize(
    ("status", "message", "headers"),
    [
        (401, "Invalid authorization token in request", {}),
        (403, "Authorization token does not have the required scopes", {}),
        (503, "Unable to verify authorization token", {"Retry-After": "5"}),
    ],
)
def test_security_errors_reach_the_client_as_raised(
    app: NICoApp,
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    message: str,
    headers: dict[str, str],
) -> None:
    # security_map: the bearer scheme's function gets the raw header and its error is answered
    # as raised (Connexion picks among failures by `status_code`).
    seen: list[str | None] = []

    async def refuse(authorization: str | None) -> None:
        seen.append(authorization)
        raise NICoError(status, message, headers=headers)

    monkeypatch.setattr(app.runtime.authenticator, "authenticate", refuse)
    response = client.get(task_path(RUNNING_TASK), headers={"Authorization": "bEaReR  x"})
    assert error(response) == (status, message)
    assert seen == ["bEaReR  x"]
    for name, value in headers.items():
        assert response.headers[name] == value


def test_uri_parser_reads_query_values_as_go_does() -> None:
    # uri_parser_class: the first of repeated keys, Go's forms; unknown or unreadable values out.
    parameters = [
        {"name": "pageSize", "in": "query", "schema": {"type": "integer"}},
        {"name": "activeOnly", "in": "query", "schema": {"type": "boolean"}},
        {"name": "siteId", "in": "query", "schema": {"type": "string"}},
    ]
    parser = framework.GoURIParser(parameters, {})
    query = {"pageSize": ["+7", "9"], "activeOnly": ["maybe"], "siteId": ["a", "b"], "x": ["1"]}
    assert parser.resolve_params(query, "query") == {"pageSize": 7, "siteId": "a"}


def test_parameter_validation_is_kept_for_the_handlers_step(
    client: TestClient, bearer: Bearer
) -> None:
    # validator_map["parameter"]: an unknown key is production's 400, but only at the step where
    # production checks the query (the site list checks membership first).
    unknown = {"siteId": ACME_SITE, "colour": "red"}
    response = client.get(LIST_PATH, params=unknown, headers=bearer(GLOBEX))
    assert error(response) == (403, f"Failed to validate membership for org: {ACME}")
    response = client.get(LIST_PATH, params=unknown, headers=bearer())
    assert error(response) == (400, "Unknown query parameter specified in request: colour")


@pytest.mark.parametrize(
    ("content", "content_type", "message"),
    [
        (b"{", "application/json", PARSE_FAILED),
        (b'{"siteId": 5}', "application/json", PARSE_FAILED),
        (b'{"siteId": ""}', "application/json", "Failed to validate cancel task request data"),
        (f'{{"siteId": "{ACME_SITE}"}}'.encode(), "text/plain", PARSE_FAILED),
    ],
)
def test_body_validation_is_kept_for_the_handlers_step(
    client: TestClient, bearer: Bearer, content: bytes, content_type: str, message: str
) -> None:
    # validator_map["body"] and the request validation middleware (middlewares=): the body is
    # read as Go reads it, and its problem answered after the provider and the task id.
    path = task_path(RUNNING_TASK) + "/cancel"
    content_type = {"Content-Type": content_type}
    response = client.post(path, content=content, headers={**bearer(), **content_type})
    assert error(response) == (400, message)
    elsewhere = path.replace(ACME, "no-provider-org")
    response = client.post(
        elsewhere, content=content, headers={**bearer("no-provider-org"), **content_type}
    )
    assert error(response) == (400, "Failed to retrieve Infrastructure Provider for org")


def test_handlers_are_given_the_body_as_go_binds_it(
    client: TestClient, bearer: Bearer, storage: Storage
) -> None:
    # MUTABLE_VALIDATION on the body validator: a nested null is an absent field (Go leaves the
    # pointer nil), a null in a list of strings is "", a lone surrogate in text is U+FFFD.
    body = (
        f'{{"siteId": "{ACME_SITE}", "state": "On", "description": null, '
        '"filter": {"rackName": "R-15", "type": "Compute", "slotId": null, "ids": null}}'
    )
    response = client.patch(
        f"/v2/org/{ACME}/nico/tray/power",
        content=body.encode(),
        headers={**bearer(), "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    blank = client.patch(
        f"/v2/org/{ACME}/nico/tray/power",
        json={"siteId": ACME_SITE, "state": "On", "filter": {"ids": ["x", None]}},
        headers=bearer(),
    )
    assert blank.json()["data"] == {"ids": {"1": "cannot be blank"}}
    surrogate = client.post(
        f"/v2/org/{ACME}/nico/rack/bringup",
        content=f'{{"siteId": "{ACME_SITE}", "filter": {{"names": ["R-15"]}}, '
        '"description": "a\\ud800b"}'.encode(),
        headers={**bearer(), "Content-Type": "application/json"},
    )
    assert surrogate.status_code == 200, surrogate.text
    (task_id,) = surrogate.json()["taskIds"]
    with storage.session() as session:
        assert session.get(Task, uuid.UUID(task_id)).description == "a\ufffdb"


def test_the_request_validation_middleware_is_ours(app: NICoApp) -> None:
    # middlewares=: Connexion's own request validation is the one replaced, in its place.
    defaults = ConnexionMiddleware.default_middlewares
    assert RequestValidationMiddleware in defaults
    expected = [
        framework.NICoRequestValidation if m is RequestValidationMiddleware else m for m in defaults
    ]
    # The built stack, less the middlewares added around Connexion's own (add_middleware).
    built = [m for m in app.middleware.middlewares if m in expected]
    assert built == expected


def test_the_access_log_reads_the_operation_routing_chose(
    client: TestClient, bearer: Bearer, caplog: pytest.LogCaptureFixture
) -> None:
    # Connexion's exported routing constant, written into a scope dict the log's scope shares.
    caplog.set_level(logging.INFO, logger="nico_api.access")
    client.get(task_path(RUNNING_TASK), params={"siteId": ACME_SITE}, headers=bearer())
    client.get("/v2/nowhere")
    logged = [r.fields for r in caplog.records if r.name == "nico_api.access"]
    assert [(line["operation"], line["path"]) for line in logged] == [
        ("get-task", "/v2/org/{org}/nico/task/{id}"),
        (None, "(no route)"),
    ]


def test_error_handlers_answer_every_error_in_the_envelope(
    client: TestClient, bearer: Bearer
) -> None:
    # add_error_handler: Starlette's 404 and 405, and Connexion's problems, in the envelope.
    assert error(client.get("/v2/nowhere")) == (404, "Not Found")
    assert error(client.delete(task_path(RUNNING_TASK), headers=bearer())) == (
        405,
        "Method Not Allowed",
    )


def test_error_handlers_run_on_the_event_loop(
    client: TestClient, bearer: Bearer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # add_error_handler with coroutines: Connexion awaits them, where it would hand a plain
    # function to a worker thread (a round trip on every error answer).
    def no_thread(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("an error handler ran in a worker thread")

    monkeypatch.setattr(connexion.middleware.exceptions, "run_in_threadpool", no_thread)
    unknown = str(uuid.uuid4())
    response = client.get(task_path(unknown), params={"siteId": ACME_SITE}, headers=bearer())
    assert response.status_code == 404
    assert error(client.get(task_path(RUNNING_TASK), params={"siteId": ACME_SITE})) == (
        401,
        auth.MISSING_HEADER,
    )
    assert error(client.get("/v2/nowhere")) == (404, "Not Found")


def test_shutdown_closes_the_runtimes_connections(app: NICoApp, bearer: Bearer) -> None:
    # lifespan=: the pools' connections are closed when the app stops, and opened again after:
    # the engine's, and the event loop's own (the task read).
    storage = app.runtime.storage
    pool = storage.engine.pool
    with app.test_client() as client:
        client.get(task_path(RUNNING_TASK), params={"siteId": ACME_SITE}, headers=bearer())
        assert client.get("/readyz").status_code == 200
        assert pool.checkedin() >= 1
        if storage.pooled is not None:
            (reads,) = storage.pooled._pools.values()
            assert reads.get_stats()["pool_available"] == 1
        if storage.local is not None:
            assert len(storage.local._loops) == 1
    assert pool.checkedin() == 0
    assert storage.pooled is None or not storage.pooled._pools
    assert storage.local is None or not storage.local._loops
    with app.test_client() as client:
        response = client.get(
            task_path(RUNNING_TASK), params={"siteId": ACME_SITE}, headers=bearer()
        )
    assert response.status_code == 200


@pytest.fixture
def cors_app(settings: Settings, app: NICoApp) -> Iterator[NICoApp]:
    """An app whose API a page at https://console.example may call from a browser."""
    allowed = create_app(settings.model_copy(update={"cors_origins": ("https://console.example",)}))
    yield allowed
    allowed.runtime.close()


def test_cors_answers_preflights_for_the_configured_origins(
    cors_app: NICoApp, client: TestClient, bearer: Bearer
) -> None:
    # add_middleware(CORSMiddleware, BEFORE_EXCEPTION): a preflight needs no token.
    preflight = {
        "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    with cors_app.test_client() as cors:
        allowed = cors.options(
            task_path(RUNNING_TASK), headers={"Origin": "https://console.example", **preflight}
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://console.example"
        assert "PATCH" in allowed.headers["access-control-allow-methods"]
        other = cors.options(
            task_path(RUNNING_TASK), headers={"Origin": "https://evil.example", **preflight}
        )
        assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
        got = cors.get(
            task_path(RUNNING_TASK),
            params={"siteId": ACME_SITE},
            headers={"Origin": "https://console.example", **bearer()},
        )
        assert got.status_code == 200
        assert got.headers["access-control-allow-origin"] == "https://console.example"
        assert "X-Pagination" in got.headers["access-control-expose-headers"]
        # An error carries the headers too, so that the page can read the envelope.
        refused = cors.get(task_path(RUNNING_TASK), headers={"Origin": "https://console.example"})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == "https://console.example"
    # None configured (the default): no CORS headers, and a preflight is 405.
    plain = client.options(
        task_path(RUNNING_TASK), headers={"Origin": "https://console.example", **preflight}
    )
    assert plain.status_code == 405 and "access-control-allow-origin" not in plain.headers


@pytest.mark.parametrize(
    ("value", "origins"),
    [
        ("", ()),
        (
            "https://a.example, http://b.example:8080/",
            ("https://a.example", "http://b.example:8080"),
        ),
        ("*", ("*",)),
    ],
)
def test_cors_origins_are_read_from_the_environment(value: str, origins: tuple) -> None:
    assert Settings.from_env({"NICO_CORS_ORIGINS": value}).cors_origins == origins


def test_a_cors_origin_that_is_not_one_is_refused() -> None:
    with pytest.raises(
        SettingsError, match=r"NICO_CORS_ORIGINS: 'console\.example' is not an origin"
    ):
        Settings.from_env({"NICO_CORS_ORIGINS": "console.example"})


def test_each_operation_is_decorated_once_not_per_request(
    app: NICoApp, client: TestClient, bearer: Bearer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The app at the end of Connexion's stack is ours, in the place AsyncApp keeps it, and it
    # serves every operation.
    assert isinstance(app.operations_app, framework._OnceDecoratedApp)
    assert app.middleware.middleware_stack[-1] is app.operations_app
    operations = [
        operation
        for apis in app.operations_app.apis.values()
        for api in apis
        for operation in api.operations.values()
    ]
    assert len(operations) == len(handlers.__all__)
    assert all(isinstance(o, framework._OnceDecoratedOperation) for o in operations)
    decorations = []
    original = framework._OnceDecorator.decorate
    monkeypatch.setattr(
        framework._OnceDecorator,
        "decorate",
        lambda self, function: decorations.append(function) or original(self, function),
    )
    for _ in range(3):
        response = client.get(
            task_path(RUNNING_TASK), params={"siteId": ACME_SITE}, headers=bearer()
        )
        assert response.status_code == 200
    # Decorated when first served (or earlier, by another test); never on each request.
    assert len(decorations) <= 1
    served = client.get(task_path(RUNNING_TASK), params={"siteId": ACME_SITE}, headers=bearer())
    assert served.json()["id"] == RUNNING_TASK
    assert len(decorations) <= 1


@pytest.mark.parametrize("path", [task_path(RUNNING_TASK), LIST_PATH])
def test_no_form_is_read_for_an_operation_without_a_body(
    client: TestClient, bearer: Bearer, path: str
) -> None:
    # The parameter decorator reads no body where the operation defines none: request
    # validation binds it as production's binder does. Connexion's form reading would answer
    # this one (a multipart type without a boundary) with its own 400 text.
    response = client.request(
        "GET",
        path,
        params={"siteId": ACME_SITE},
        headers={**bearer(), "Content-Type": "multipart/form-data"},
        content=b"--x\r\nbroken",
    )
    assert error(response) == (400, PARSE_FAILED)


@pytest.mark.parametrize("name", ["siteId", "id", "activeOnly", "pageNumber", "X-Request-ID", "9x"])
def test_parameter_names_are_made_pythonic_as_connexion_does(name: str) -> None:
    from connexion.decorators.parameter import pythonic

    assert framework._pythonic(name) == pythonic(name)
    assert framework._pythonic.cache_info().maxsize == 1024


@pytest.mark.parametrize(
    ("param", "value"),
    [
        (
            {
                "name": "id",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "format": "uuid"},
            },
            "nope",
        ),
        (
            {
                "name": "id",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "format": "uuid"},
            },
            RUNNING_TASK,
        ),
        ({"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}, None),
        ({"name": "n", "in": "header", "schema": {"type": "string", "maxLength": 2}}, "long"),
        ({"name": "n", "in": "header", "schema": {"type": "string", "nullable": True}}, "null"),
        ({"name": "n", "in": "header", "schema": {"type": "integer"}}, None),
    ],
)
def test_parameters_are_checked_as_connexion_checks_them(param: dict, value: object) -> None:
    from connexion.validators.parameter import ParameterValidator

    ours = framework.NICoParameterValidator.validate_parameter(param["in"], value, param)
    assert ours == ParameterValidator.validate_parameter(param["in"], value, param)


def test_the_uri_parser_reads_connexions_parameter_schemas() -> None:
    from connexion.uri_parsing import OpenAPIURIParser

    params = [
        {"name": "siteId", "in": "query", "schema": {"type": "string", "format": "uuid"}},
        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
        {"name": "X-Request-ID", "in": "header", "schema": {"type": "string"}},
    ]
    parser = framework.GoURIParser(params, {})
    assert parser.param_schemas == OpenAPIURIParser(params, {}).param_schemas


def test_handlers_get_the_arguments_connexions_decorator_gives_them(
    app: NICoApp, settings: Settings, bearer: Bearer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # _ParameterDecorator builds the handlers' arguments itself, with what it can once per
    # operation: each handler is given what Connexion's own decorator gives it, for path and
    # query parameters (defaults and Go's reading included), bodies and the request context.
    from connexion.apps.asynchronous import AsyncOperation

    given: list[tuple[str, dict[str, object]]] = []
    original = framework.handler_for

    def recording(operation_id: str) -> object:
        handler = original(operation_id)

        @functools.wraps(handler)
        async def record(**kwargs: object) -> object:
            context = {framework.RUNTIME, framework.PROBLEMS, "token_info"}
            given.append(
                (
                    operation_id,
                    {k: type(v).__name__ if k in context else v for k, v in kwargs.items()},
                )
            )
            answer = handler(**kwargs)
            return await answer if inspect.isawaitable(answer) else answer

        return record

    monkeypatch.setattr(framework, "handler_for", recording)
    power = {"siteId": ACME_SITE, "state": "On", "filter": {"names": ["no-such-rack"]}}
    requests = [
        ("GET", task_path(RUNNING_TASK), {"siteId": ACME_SITE}, None),
        ("GET", LIST_PATH, {"siteId": ACME_SITE}, None),
        ("GET", LIST_PATH, {"siteId": ACME_SITE, "activeOnly": "t", "pageSize": "+5"}, None),
        ("GET", LIST_PATH, {"siteId": ACME_SITE, "activeOnly": "perhaps"}, None),
        ("POST", task_path(RUNNING_TASK) + "/cancel", {}, {"siteId": ACME_SITE}),
        ("PATCH", f"/v2/org/{ACME}/nico/rack/power", {}, power),
        ("GET", f"/v2/org/{ACME}/nico/user/current", {}, None),
        ("GET", "/healthz", {}, None),
    ]

    def arguments() -> list[tuple[str, dict[str, object]]]:
        given.clear()
        with create_app(settings).test_client() as client:
            for method, path, params, body in requests:
                client.request(method, path, params=params, json=body, headers=bearer())
        return list(given)

    ours = arguments()
    monkeypatch.setattr(
        framework._OnceDecoratedOperation, "fn", AsyncOperation.__dict__["fn"], raising=True
    )
    assert [name for name, _ in ours] == [
        "get-task",
        "get-all-tasks",
        "get-all-tasks",
        "get-all-tasks",
        "cancel-task",
        "power-control-racks",
        "get-user",
        "get-health",
    ]
    assert ours == arguments()


# The frameworks whose private names the service must not use, and the service's packages.
FRAMEWORKS = ("connexion", "starlette", "uvicorn")
ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (ROOT / "nico_api", ROOT / "handlers")


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def python_files(*roots: Path) -> Iterator[Path]:
    for root in roots:
        yield from sorted(root.rglob("*.py"))


@functools.cache
def framework_names() -> tuple[frozenset[str], frozenset[str]]:
    """Every private name the frameworks define (functions, classes, attributes, module
    globals), and the `connexion_*` strings they use as scope keys."""
    import importlib.util

    names: set[str] = set()
    keys: set[str] = set()
    for framework_name in FRAMEWORKS:
        spec = importlib.util.find_spec(framework_name)
        assert spec is not None and spec.submodule_search_locations, framework_name
        for path in python_files(*map(Path, spec.submodule_search_locations)):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    names.add(node.name)
                elif isinstance(node, ast.Attribute):
                    names.add(node.attr)
                elif isinstance(node, ast.Name):
                    names.add(node.id)
                elif isinstance(node, ast.Constant) and str(node.value).startswith("connexion_"):
                    keys.add(node.value)
    return frozenset(filter(is_private, names)), frozenset(keys)


# Python's own underscore API (named tuples), which the frameworks use too.
PYTHONS = frozenset({"_asdict", "_field_defaults", "_fields", "_make", "_replace"})


@functools.cache
def names_defined_by_the_service() -> frozenset[str]:
    defined: set[str] = set()
    for path in python_files(*PACKAGES):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                defined.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                defined.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                defined.add(node.attr)
    return frozenset(defined)


def private_framework_names(path: Path) -> list[str]:
    """Where `path` uses a private name of connexion, starlette or uvicorn: one imported, a
    private module, a scope key of theirs, any underscore member of a class built on one of
    theirs, or (where the module imports theirs) an attribute that only they define."""
    private, scope_keys = framework_names()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    theirs: set[str] = set()
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FRAMEWORKS:
            theirs.update(alias.asname or alias.name for alias in node.names)
            if any(is_private(part) for part in node.module.split(".")):
                found.append(f"{node.lineno}: module {node.module}")
            found += [f"{node.lineno}: {a.name}" for a in node.names if is_private(a.name)]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FRAMEWORKS:
                    theirs.add((alias.asname or alias.name).split(".")[0])
                    if any(is_private(part) for part in alias.name.split(".")):
                        found.append(f"{node.lineno}: module {alias.name}")
        elif isinstance(node, ast.Constant) and node.value in scope_keys:
            found.append(f"{node.lineno}: scope key {node.value!r}")
    in_their_classes: set[ast.AST] = set()
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        if not {ast.unparse(base).split(".")[0] for base in cls.bases} & theirs:
            continue
        class_attributes = {
            target
            for statement in cls.body
            if isinstance(statement, ast.Assign | ast.AnnAssign)
            for target in getattr(statement, "targets", [getattr(statement, "target", None)])
        }
        for node in ast.walk(cls):
            in_their_classes.add(node)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node is not cls:
                name = node.name
            elif isinstance(node, ast.Attribute):
                name = node.attr
            elif isinstance(node, ast.Name) and node in class_attributes:
                name = node.id
            else:
                continue
            if is_private(name):
                found.append(f"{node.lineno}: {name} in {cls.name}, built on theirs")
    if theirs:
        ours = names_defined_by_the_service()
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node not in in_their_classes
                and node.attr in private - PYTHONS
                and node.attr not in ours
            ):
                found.append(f"{node.lineno}: .{node.attr}")
    return sorted(set(found), key=lambda line: int(line.partition(":")[0]))


@pytest.mark.slow  # parses every module of the three frameworks: about 1 s
def test_no_private_name_of_the_frameworks_is_used() -> None:
    # Connexion, Starlette and uvicorn are customised through what they document: an upgrade
    # that keeps their documented interfaces keeps the service's answers.
    used = {
        str(path.relative_to(ROOT)): names
        for path in python_files(*PACKAGES)
        if (names := private_framework_names(path))
    }
    assert used == {}


@pytest.mark.slow  # parses every module of the three frameworks: about 1 s
def test_the_private_name_check_finds_them(tmp_path: Path) -> None:
    source = tmp_path / "reach.py"
    source.write_text(
        "from connexion.decorators.parameter import _get_val_from_param\n"
        "from connexion.apps.asynchronous import AsyncOperation\n"
        "from starlette.requests import Request\n"
        "class Op(AsyncOperation):\n"
        "    def fn(self):\n"
        "        return self._fn\n"
        "def context(scope, app):\n"
        "    app._middleware_app = None\n"
        "    return scope['extensions']['connexion_context']\n"
    )
    assert private_framework_names(source) == [
        "1: _get_val_from_param",
        "6: _fn in Op, built on theirs",
        "8: ._middleware_app",
        "9: scope key 'connexion_context'",
    ]
