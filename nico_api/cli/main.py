"""The `nico-api` command line: serve, run the simulated Flow, prepare the database, and mint
development tokens.

Each command imports what it uses when it runs, so that a quick one (`token`) starts quickly.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nico_api.cli import proxy
from nico_api.cli.contract import TARGETS
from nico_api.config import MULTIPROCESS_DIR, SPEC_PATH, InvalidInputError, Settings

if TYPE_CHECKING:
    from nico_api.auth.issuers import AuthConfig
    from nico_api.storage.db import Storage


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import logging.config

    import uvicorn

    from nico_api import logs
    from nico_api.auth import authenticator as auth
    from nico_api.web import edge

    if args.reload and args.workers > 1:
        raise InvalidInputError("--reload runs one worker: leave out --workers")
    logging.config.dictConfig(logs.config(args.log_level))
    # Refuse to start on an invalid auth configuration, with its message rather than a traceback;
    # without one, each worker's app says once that it trusts the development issuer.
    if settings.auth_config is not None:
        auth.load_auth_config(settings.auth_config)
    edge.open_every_file_allowed()  # before uvicorn forks its workers, which inherit it
    with _metrics_for_workers(settings):
        # Each worker builds its own app from the same environment.
        uvicorn.run(
            "nico_api.web.app:serving_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            # A worker that is still importing on a busy host is not dead: uvicorn's 5 s default
            # had it killed and restarted, over and over, before it could serve.
            timeout_worker_healthcheck=60,
            log_level=args.log_level,
            log_config=logs.config(args.log_level),
            access_log=False,
            # Bounded request heads and idle kept-alive connections (bodies: the app's guard).
            **edge.server_options(settings),
            reload=args.reload,
            # The package's code and the spec it serves (the handlers live apart in a checkout).
            reload_dirs=_source_dirs() if args.reload else None,
            reload_includes=["*.py", "*.yaml"] if args.reload else None,
        )
    return 0


@contextmanager
def _metrics_for_workers(settings: Settings) -> Iterator[None]:
    """A folder of this server's own, in which every worker writes its figures for /metrics (or
    for the metrics port, served here), removed when the server stops, SIGTERM included."""
    import os
    import shutil
    import signal
    import tempfile

    if not settings.metrics:
        yield
        return
    # prometheus-client chooses where figures go once, when first imported: not yet, here.
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before its multiprocess folder was set")
    folder = tempfile.mkdtemp(prefix="nico-metrics-")
    previous = os.environ.get(MULTIPROCESS_DIR)
    os.environ[MULTIPROCESS_DIR] = folder
    # uvicorn raises the signal that stopped it again once it has shut down; SIGTERM's default
    # would then end the process before the folder is removed: unwind instead.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    own_port = (
        _metrics_port(settings.metrics_host, settings.metrics_port)
        if settings.metrics_port is not None
        else nullcontext()
    )
    try:
        with own_port:
            yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if previous is None:
            os.environ.pop(MULTIPROCESS_DIR, None)
        else:
            os.environ[MULTIPROCESS_DIR] = previous


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    sys.exit(128 + signum)


@contextmanager
def _metrics_port(host: str, port: int, registry: object = None) -> Iterator[None]:
    """Prometheus metrics served on a port of their own while the block runs: `registry`'s, or
    every worker's."""
    from prometheus_client import start_http_server

    from nico_api import metrics

    try:
        server, _thread = start_http_server(
            port, addr=host, registry=registry or metrics.workers_registry()
        )
    except OSError as exc:
        raise InvalidInputError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from None
    try:
        yield
    finally:
        server.shutdown()


def _source_dirs() -> list[str]:
    import importlib.util

    dirs = []
    for package in ("nico_api", "nico_api.handlers"):
        spec = importlib.util.find_spec(package)
        # In a checkout the handlers are a link to handlers/: the folder itself is watched.
        dirs += [str(Path(d).resolve()) for d in (spec.submodule_search_locations or [])]
    return dirs


def _flow(args: argparse.Namespace, settings: Settings) -> int:
    import logging
    import logging.config
    import signal
    import threading

    from nico_api import logs
    from nico_api.flow.executor import AlreadyRunningError, Executor, only_flow_process

    logging.config.dictConfig(logs.config(args.log_level))
    log = logging.getLogger("nico_api.flow")
    stop = threading.Event()
    for stopping in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stopping, lambda *_: stop.set())
    metrics = None
    serving_metrics = nullcontext()
    if args.metrics_port is not None:
        from nico_api.metrics import FlowMetrics

        metrics = FlowMetrics()
        serving_metrics = _metrics_port(args.metrics_host, args.metrics_port, metrics.registry)
    with serving_metrics, _storage(settings) as storage:
        try:
            with only_flow_process(storage) as lock:
                executor = Executor(storage, settings, metrics, lock)
                log.info(
                    "flow started",
                    extra={
                        "fields": {
                            "database": _safe_url(settings),
                            "step_seconds": settings.flow_step_seconds,
                            "promoter_sweep_seconds": settings.flow_promoter_sweep_seconds,
                        }
                    },
                )
                executor.run(stop)
                log.info("flow stopped", extra={"fields": executor.lag_summary()})
        except AlreadyRunningError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


@contextmanager
def _storage(settings: Settings) -> Iterator[Storage]:
    from nico_api.storage.db import Storage

    storage = Storage(settings)
    try:
        yield storage
    finally:
        storage.dispose()


def _db_upgrade(_args: argparse.Namespace, settings: Settings) -> int:
    with _storage(settings) as storage:
        storage.upgrade()
    print(f"database schema up to date: {_safe_url(settings)}")
    return 0


def _db_load(args: argparse.Namespace, settings: Settings) -> int:
    from nico_api.storage import fixture

    with _storage(settings) as storage:
        summary = fixture.load_file(storage, args.file)
    print(f"loaded {summary} from {args.file}")
    return 0


def _db_seed(_args: argparse.Namespace, settings: Settings) -> int:
    from nico_api.storage import fixture

    with _storage(settings) as storage:
        storage.upgrade()
        summary = fixture.load(storage, fixture.demo())
    print(f"loaded demo data: {summary}")
    return 0


def _db_recount(_args: argparse.Namespace, settings: Settings) -> int:
    with _storage(settings) as storage:
        print(f"recounted the task lists' totals: {storage.recount()} counts")
    return 0


def _token(args: argparse.Namespace, settings: Settings) -> int:
    from nico_api.auth.dev_issuer import DevIssuer

    key = settings.dev_key_path
    existed = key.exists()
    if not existed and not args.create_key:
        raise InvalidInputError(
            f"no development signing key in the instance folder {settings.instance_dir} "
            f"({key.name}): a server started with NICO_INSTANCE_DIR={settings.instance_dir} "
            "makes one, or add --create-key"
        )
    issuer = DevIssuer(settings)
    made = "made the" if not existed else "signed with the"
    print(f"{made} development key {issuer.key_id} in {key}", file=sys.stderr)
    if settings.auth_config is not None:
        print(
            f"warning: NICO_AUTH_CONFIG is set ({settings.auth_config}): a server with it "
            "trusts only its configured issuers and refuses this token",
            file=sys.stderr,
        )
    print(issuer.issue(args.org, args.role, args.ttl))
    return 0


def _auth_config(args: argparse.Namespace, settings: Settings) -> AuthConfig:
    from nico_api.auth import authenticator as auth

    if args.config is not None:
        settings = settings.model_copy(update={"auth_config": args.config})
    return auth.auth_config_for(settings)


def _auth_check(args: argparse.Namespace, settings: Settings) -> int:
    config = _auth_config(args, settings)
    print(f"{len(config.issuers)} issuer(s), leeway {config.leeway:g}s")
    for issuer in config.issuers:
        print(f"- {issuer.name}: iss {issuer.issuer!r}")
        keys = issuer.jwks or "shared secret"
        print(f"    keys: {keys} (timeout {issuer.jwks_timeout:g}s)")
        print(f"    algorithms: {', '.join(issuer.algorithms)}")
        print(f"    audiences: {', '.join(issuer.audiences) or '(not checked)'}")
        print(f"    scopes: {', '.join(issuer.scopes) or '(none required)'}")
        for mapping in issuer.claim_mappings:
            print(f"    mapping: {mapping.describe()}")
    return 0


def _auth_whoami(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from nico_api.auth import authenticator as auth

    authenticator = auth.Authenticator(_auth_config(args, settings))
    try:
        caller = asyncio.run(authenticator.verify(args.token.strip()))
    except auth.TokenRejectedError as exc:
        print(f"rejected: {exc.status_code} {exc.message} ({exc.reason})", file=sys.stderr)
        return 1
    print(f"issuer: {caller.issuer}")
    print(f"subject: {caller.subject}")
    print(f"user id: {caller.user_id}")
    if not caller.roles_by_org:
        print("orgs: none (the token maps to no org)")
    for org, roles in sorted(caller.roles_by_org.items()):
        print(f"org {org}: {', '.join(sorted(roles)) or '(member, no role)'}")
    return 0


def _conformance(args: argparse.Namespace, _settings: Settings) -> int:
    from xml.etree import ElementTree

    import httpx

    from nico_api.cli import contract

    try:
        from nico_api.cli import conformance
    except ModuleNotFoundError as exc:
        if exc.name not in ("schemathesis", "hypothesis"):
            raise
        raise InvalidInputError(
            f"nico-api conformance needs {exc.name}, which comes with the conformance extra: "
            "pip install 'nico-task-api[conformance]'"
        ) from None

    org = args.org or _unverified_claim(args.token, "org")
    known = conformance.KnownValues(
        org=org,
        site_id=args.site_id,
        task_ids=args.task_id or (),
        rack_ids=args.rack_id or (),
        tray_ids=args.tray_id or (),
        rack_names=args.rack_name or (),
        cancel_task_ids=args.cancel_task_id or (),
    )
    checked = None
    if args.contract:
        caller = contract.Caller(
            token=args.token,
            known=known,
            allow_writes=args.allow_writes,
            tenant_token=args.tenant_token,
            other_org=args.other_org,
            non_flow_site_id=args.non_flow_site_id,
        )
        # Run first: its task per create operation, before generated writes fill rack queues.
        try:
            with httpx.Client(base_url=args.base_url.rstrip("/"), timeout=30) as client:
                checked = contract.run(client, caller, args.target)
        except httpx.TransportError as exc:
            print(f"error: cannot reach {args.base_url}: {exc}", file=sys.stderr)
            return 2
    schema = conformance.load_schema(base_url=args.base_url.rstrip("/"), spec=args.spec)
    try:
        report = conformance.run(
            schema,
            headers={"Authorization": f"Bearer {args.token}"},
            known=known,
            max_examples=args.max_examples,
            target=args.base_url,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
            allow_writes=args.allow_writes,
        )
    except OSError as exc:
        print(f"error: cannot reach {args.base_url}: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    suites = [report.junit()]
    ok = report.ok
    if checked is not None:
        print()
        print(checked.summary())
        suites.append(checked.junit())
        ok = ok and checked.ok
    if args.junit is not None:
        junit = ElementTree.Element("testsuites")
        junit.extend(suites)
        args.junit.write_text(
            ElementTree.tostring(junit, encoding="unicode", xml_declaration=True),
            encoding="utf-8",
        )
    return 0 if ok else 1


def _unverified_claim(token: str, name: str) -> str | None:
    """A claim read without verification: only to choose test values, never to trust."""
    import jwt

    try:
        value = jwt.decode(token, options={"verify_signature": False}).get(name)
    except jwt.PyJWTError:
        return None
    return value if isinstance(value, str) else None


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.database_url).render_as_string(hide_password=True)


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be a port number, 1 to 65535")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


# Every command's help ends with where its settings are listed.
SETTINGS_EPILOG = (
    "Settings: NICO_* environment variables, then a .env file in the working directory; "
    "every one is listed in docs/production.md."
)


class _Parser(argparse.ArgumentParser):
    """A parser whose help, and its commands' (argparse makes them of its class), names the
    settings page."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("epilog", SETTINGS_EPILOG)
        super().__init__(**kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="nico-api",
        description="A NICo Task API server, its simulated NICo Flow, and their tools. Settings "
        "come from NICO_* environment variables and a .env file in the working directory.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="serve the API with uvicorn", description="Serve the API with uvicorn."
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (%(default)s)")
    serve.add_argument(
        "--workers", type=_positive, default=1, help="worker processes (%(default)s)"
    )
    serve.add_argument(
        "--reload",
        action="store_true",
        help="development: restart when the code or the spec changes (one worker)",
    )
    serve.add_argument("--log-level", default="info", choices=_LOG_LEVELS, help=_LOG_LEVEL)
    serve.set_defaults(run=_serve)

    flow = commands.add_parser(
        "flow",
        help="run the simulated NICo Flow: execute the tasks in the database",
        description="Run the simulated NICo Flow: execute the tasks in the database, one step "
        "every NICO_FLOW_STEP_SECONDS. One Flow process per database.",
    )
    flow.add_argument("--log-level", default="info", choices=_LOG_LEVELS, help=_LOG_LEVEL)
    flow.add_argument(
        "--metrics-port",
        type=_port,
        help="serve Prometheus metrics (tasks by status, step lag) on this port; default: none",
    )
    flow.add_argument(
        "--metrics-host", default="127.0.0.1", help="address of the metrics port (%(default)s)"
    )
    flow.set_defaults(run=_flow)

    database = commands.add_parser(
        "db",
        help="prepare and fill the database",
        description="Prepare and fill the database of NICO_DATABASE_URL (default: the embedded "
        "SQLite file in the instance folder).",
    )
    db_commands = database.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    db_commands.add_parser("init", help="create the schema (same as upgrade)").set_defaults(
        run=_db_upgrade
    )
    db_commands.add_parser("upgrade", help="apply the schema migrations").set_defaults(
        run=_db_upgrade
    )
    load = db_commands.add_parser("load", help="load providers, sites and tasks from a file")
    load.add_argument("file", type=Path, help="a YAML or JSON fixture file")
    load.set_defaults(run=_db_load)
    seed = db_commands.add_parser("seed", help="load a built-in data set")
    seed.add_argument("--demo", action="store_true", required=True, help="the demo data set")
    seed.set_defaults(run=_db_seed)
    db_commands.add_parser(
        "recount", help="count the task lists' totals afresh from the stored tasks"
    ).set_defaults(run=_db_recount)

    auth_parser = commands.add_parser(
        "auth",
        help="check the auth configuration and tokens",
        description="Check the auth configuration (NICO_AUTH_CONFIG) and what it grants tokens.",
    )
    auth_commands = auth_parser.add_subparsers(
        dest="auth_command", required=True, metavar="COMMAND"
    )
    config_help = "an auth configuration file (default: $NICO_AUTH_CONFIG, else development)"
    check = auth_commands.add_parser("check", help="validate an auth configuration file")
    check.add_argument("--config", type=Path, help=config_help)
    check.set_defaults(run=_auth_check)
    whoami = auth_commands.add_parser("whoami", help="what the server would grant a token")
    whoami.add_argument("token", help="a bearer token, without 'Bearer '")
    whoami.add_argument("--config", type=Path, help=config_help)
    whoami.set_defaults(run=_auth_whoami)

    check_api = commands.add_parser(
        "conformance",
        help="check a running server against openapi.yaml",
        description="Check a running server against openapi.yaml with schemathesis (the "
        "conformance extra), read-only unless --allow-writes.",
    )
    check_api.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8080")
    check_api.add_argument("--token", required=True, help="a bearer token for the server")
    check_api.add_argument("--site-id", required=True, help="a Site with tasks the token may read")
    check_api.add_argument(
        "--task-id", action="append", help="a Task at that Site, only read; repeatable"
    )
    check_api.add_argument(
        "--rack-id",
        action="append",
        help="a Rack at that Site (its id): read, and with --allow-writes the only Rack the "
        "operations on one Rack act on (and the tray batches, without --tray-id); repeatable",
    )
    check_api.add_argument(
        "--rack-name",
        action="append",
        help="with --allow-writes: a Rack at that Site, by name, the only Racks the batch "
        "operations on Racks act on; repeatable",
    )
    check_api.add_argument(
        "--tray-id",
        action="append",
        help="a Tray at that Site: read, and with --allow-writes the only Tray the operations "
        "on Trays act on; repeatable",
    )
    check_api.add_argument(
        "--allow-writes",
        action="store_true",
        help="also run the operations that change records: cancel, and those that create "
        "tasks (with --contract, the create operations' rows too)",
    )
    check_api.add_argument(
        "--cancel-task-id",
        action="append",
        help="a Task at that Site that a run with --allow-writes may cancel; repeatable",
    )
    check_api.add_argument(
        "--contract",
        action="store_true",
        help="also check production's behaviour row by row (docs/contract.md): "
        "statuses, messages and the order of the checks",
    )
    check_api.add_argument(
        "--target",
        choices=TARGETS,
        default=TARGETS[0],
        help="whose answers --contract expects: production reports the differences "
        "of docs/differences.md as known, not as failures",
    )
    check_api.add_argument(
        "--tenant-token", help="--contract: a token of the org without the Provider Admin role"
    )
    check_api.add_argument("--other-org", help="--contract: an org the token is not a member of")
    check_api.add_argument(
        "--non-flow-site-id", help="--contract: a Site of the org without NICo Flow"
    )
    check_api.add_argument("--org", help="the org of the paths; default: the token's org claim")
    check_api.add_argument(
        "--max-examples", type=_positive, default=100, help="per operation (%(default)s)"
    )
    check_api.add_argument("--junit", type=Path, help="write a JUnit XML report here")
    check_api.add_argument(
        "--spec", type=Path, default=SPEC_PATH, help="default: the openapi.yaml it serves"
    )
    check_api.set_defaults(run=_conformance)

    proxy.add_command(commands)

    token = commands.add_parser(
        "token",
        help="print a development token",
        description="Print a token signed with the development key in the instance folder "
        "(NICO_INSTANCE_DIR), which a server without NICO_AUTH_CONFIG trusts. It names the key "
        "on standard error; it makes one only with --create-key.",
    )
    token.add_argument("--org", required=True, help="the org the token is a member of")
    token.add_argument(
        "--role", action="append", required=True, help="a role in that org; repeat for more"
    )
    token.add_argument(
        "--ttl", type=_positive, default=3600, help="lifetime in seconds (%(default)s)"
    )
    token.add_argument(
        "--create-key",
        action="store_true",
        help="make the development key if the instance folder has none",
    )
    token.set_defaults(run=_token)
    return parser


_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
_LOG_LEVEL = "how much to log (%(default)s)"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nico-task-api")
    except PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        return args.run(args, settings)
    except InvalidInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except Exception as exc:
        # A database error can only come from a command that loaded SQLAlchemy.
        database = sys.modules.get("sqlalchemy.exc")
        if database is None or not isinstance(exc, database.SQLAlchemyError):
            raise
        detail = getattr(exc, "orig", None) or exc
        print(f"error: database: {exc.__class__.__name__}: {detail}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
