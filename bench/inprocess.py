"""`python -m bench.inprocess`: the task GET in process, with no network: the service and the
limit app (bench/baseline.py) called as ASGI apps, interleaved, in microseconds per request; then
the service's time split by layer, measured by timing each layer's own share of a request.

    python -m bench.inprocess                       # SQLite, and PostgreSQL if reachable
    python -m bench.inprocess --backend sqlite --requests 2000 --rounds 9

The report goes to bench/results/ (the latest in bench/results/inprocess-latest.md).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench import baseline
from bench.dataset import ORG, SITE
from bench.run import POSTGRES_ADMIN, database_url, publish
from nico_api.auth.dev_issuer import DevIssuer
from nico_api.config import Settings
from nico_api.storage import fixture
from nico_api.storage.db import Storage
from nico_api.web.app import create_app

# The demo's running task, at the benchmark's Site.
TASK = "e22423ac-1fbd-4d60-8093-20164fbc635b"
ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]


def settings_for(backend: str, instance: Path) -> Settings:
    """A database holding the demo data, for `backend`."""
    url = (
        f"sqlite:///{instance / 'nico.db'}"
        if backend == "sqlite"
        else database_url("postgresql", "inprocess")
    )
    settings = Settings(instance_dir=instance, database_url=url)
    storage = Storage(settings)
    try:
        storage.upgrade()
        fixture.load(storage, fixture.demo())
    finally:
        storage.dispose()
    return settings


def request_scope(token: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 50000),
        "root_path": "",
        "path": f"/v2/org/{ORG}/nico/task/{TASK}",
        "raw_path": f"/v2/org/{ORG}/nico/task/{TASK}".encode(),
        "query_string": f"siteId={SITE}".encode(),
        "headers": [
            (b"host", b"127.0.0.1:8080"),
            (b"authorization", f"Bearer {token}".encode()),
            (b"accept", b"*/*"),
        ],
    }


async def call(app: ASGIApp, scope: dict[str, Any]) -> int:
    """One request through the app; its status (the body is read and dropped)."""
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(dict(scope), receive, send)
    return status


@contextmanager
def lifespan(app: ASGIApp, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """The app started as a server starts it, and shut down at the end."""
    messages: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    started = loop.create_future()

    async def receive() -> dict[str, str]:
        return await messages.get()

    async def send(message: dict[str, Any]) -> None:
        if message["type"].startswith("lifespan.startup") and not started.done():
            started.set_result(message["type"])

    task = loop.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    messages.put_nowait({"type": "lifespan.startup"})
    loop.run_until_complete(started)
    try:
        yield
    finally:
        messages.put_nowait({"type": "lifespan.shutdown"})
        loop.run_until_complete(task)


async def per_request_us(app: ASGIApp, scope: dict[str, Any], requests: int) -> float:
    started = time.perf_counter()
    for _ in range(requests):
        status = await call(app, scope)
        assert status == 200, status
    return (time.perf_counter() - started) / requests * 1e6


# The layers of a service request: each wrapped callable's own time (its time less that of the
# wrapped callables it calls) goes to its layer. The classes are Connexion's middlewares and the
# service's own, outermost first.
LAYERS: dict[str, tuple[str, ...]] = {
    "server and exception middlewares": (
        "connexion.middleware.main:ConnexionMiddleware.__call__",
        "starlette.middleware.errors:ServerErrorMiddleware.__call__",
        "connexion.middleware.exceptions:ExceptionMiddleware.__call__",
        "nico_api.web.framework:ProvideRuntime.__call__",
        "connexion.middleware.swagger_ui:SwaggerUIMiddleware.__call__",
        "nico_api.web.framework:NoSlashRedirect.__call__",
        "nico_api.web.edge:BodyGuard.__call__",
        "connexion.middleware.lifespan:LifespanMiddleware.__call__",
    ),
    "access log and metrics": ("nico_api.logs:AccessLog.__call__",),
    # Connexion routes twice: the routing middleware, then each routed middleware per operation.
    "routing": (
        "connexion.middleware.routing:RoutingMiddleware.__call__",
        "connexion.middleware.routing:RoutingOperation.__call__",
        "connexion.middleware.abstract:RoutedMiddleware.__call__",
    ),
    "security": ("connexion.middleware.security:SecurityOperation.__call__",),
    "token check (the limit's too)": ("nico_api.auth.authenticator:Authenticator.authenticate",),
    "request validation": (
        "nico_api.web.framework:_ValidationOperation.__call__",
        "connexion.middleware.request_validation:RequestValidationOperation.__call__",
    ),
    "response validation": (
        "connexion.middleware.response_validation:ResponseValidationOperation.__call__",
    ),
    # The context middleware is a routed middleware: its own time is in "routing".
    "handler (Connexion's decorators and the check list)": (
        "connexion.apps.asynchronous:AsyncOperation.__call__",
        "handlers:get_task",
    ),
    "database": (
        "nico_api.storage.db:Storage.run_in_thread",
        "nico_api.storage.db:Storage.read_row",
    ),
    "translation (the limit's too)": ("nico_api.store:lookup_from_row",),
    "serialisation (the limit's too)": ("nico_api.web.framework:APIJsonifier.dumps",),
}


def _resolve(target: str) -> tuple[Any, str]:
    module_name, _, path = target.partition(":")
    owner: Any = __import__(module_name, fromlist=["_"])
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    return owner, name


@contextmanager
def layer_clock() -> Iterator[dict[str, float]]:
    """Each layer's own seconds, summed, while the block runs. Each task keeps its own stack
    of calls, so that a task that waits (the app's lifespan) takes no request's time."""
    own: dict[str, float] = defaultdict(float)
    # Per task, per active call: [started, time spent in the wrapped calls it made].
    stacks: ContextVar[list[list[float]] | None] = ContextVar("layer_stack", default=None)
    patched: dict[tuple[int, str], str] = {}
    originals: list[tuple[Any, str, Any]] = []

    @contextmanager
    def timing(layer: str) -> Iterator[None]:
        stack = stacks.get()
        if stack is None:
            stack = []
            stacks.set(stack)
        frame = [time.perf_counter(), 0.0]
        stack.append(frame)
        try:
            yield
        finally:
            assert stack.pop() is frame
            spent = time.perf_counter() - frame[0]
            own[layer] += spent - frame[1]
            if stack:
                stack[-1][1] += spent

    def timed(layer: str, original: Callable) -> Callable:
        if asyncio.iscoroutinefunction(original):

            @functools.wraps(original)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                with timing(layer):
                    return await original(*args, **kwargs)

            return wrapper

        @functools.wraps(original)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            with timing(layer):
                return original(*args, **kwargs)

        return sync_wrapper

    for layer, targets in LAYERS.items():
        for target in targets:
            owner, name = _resolve(target)
            if isinstance(owner, type):  # patch the class that defines it
                owner = next(k for k in owner.__mro__ if name in k.__dict__)
            # One callable, one layer: a second entry for it would be counted in the first.
            assert (id(owner), name) not in patched, f"{target} is {patched[(id(owner), name)]}"
            patched[(id(owner), name)] = layer
            original = owner.__dict__[name]
            originals.append((owner, name, original))
            setattr(owner, name, timed(layer, original))
    try:
        yield own
    finally:
        for owner, name, original in reversed(originals):
            setattr(owner, name, original)


def measure(backend: str, requests: int, rounds: int) -> str:
    with tempfile.TemporaryDirectory() as folder:
        instance = Path(folder)
        settings = settings_for(backend, instance)
        token = DevIssuer(settings).issue(ORG, ["PROVIDER_ADMIN"], 3600)
        scope = request_scope(token)
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        service, limit = create_app(settings), baseline.create_app(settings)
        gc.collect()
        gc.freeze()
        timings: dict[str, list[float]] = {"service": [], "limit": []}
        with lifespan(service, loop), lifespan(limit, loop):
            for app in (service, limit):  # warm both: caches, pools, first-use imports
                loop.run_until_complete(per_request_us(app, scope, requests))
            for _ in range(rounds):
                for name, app in (("service", service), ("limit", limit)):
                    timings[name].append(
                        loop.run_until_complete(per_request_us(app, scope, requests))
                    )
        # The split: a service built with each layer wrapped (Connexion binds the handler and
        # the middlewares as it builds), run alone.
        with layer_clock() as own:
            timed = create_app(settings)
            with lifespan(timed, loop):
                loop.run_until_complete(per_request_us(timed, scope, requests))
                own.clear()
                clocked = [
                    loop.run_until_complete(per_request_us(timed, scope, requests))
                    for _ in range(rounds)
                ]
                # Before the lifespan ends: its own wait would count as its layer's time.
                split = dict(own)
        loop.close()
    return report(backend, requests, rounds, timings, split, statistics.median(clocked))


def report(
    backend: str,
    requests: int,
    rounds: int,
    timings: dict[str, list[float]],
    own: dict[str, float],
    clocked: float,
) -> str:
    service = statistics.median(timings["service"])
    limit = statistics.median(timings["limit"])
    lines = [
        f"## {backend}: the demo task's GET, in process ({rounds} interleaved rounds of "
        f"{requests:,} requests; medians)",
        "",
        "| app | us per request | rounds (min..max) |",
        "|---|---:|---|",
    ]
    for name, value in (("service", service), ("limit", limit)):
        low, high = min(timings[name]), max(timings[name])
        lines.append(f"| {name} | {value:,.0f} | {low:,.0f}..{high:,.0f} |")
    lines += [
        "",
        f"ratio (limit / service time): {limit / service:.2f}; the service's own overhead: "
        f"{service - limit:,.0f} us per request",
        "",
        "The service's time by layer: each layer's own time per request, measured on a "
        f"service whose layers are wrapped in timers ({clocked:,.0f} us per request with "
        "them):",
        "",
        "| layer | us per request |",
        "|---|---:|",
    ]
    total = 0.0
    for layer in LAYERS:
        us = own.get(layer, 0.0) / (rounds * requests) * 1e6
        total += us
        lines.append(f"| {layer} | {us:,.0f} |")
    lines.append(f"| the layers in all | {total:,.0f} |")
    return "\n".join(lines) + "\n"


def _postgres_reachable() -> bool:
    try:
        psycopg.connect(POSTGRES_ADMIN, connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument("--requests", type=int, default=1000, help="per round (%(default)s)")
    parser.add_argument("--rounds", type=int, default=7, help="per app (%(default)s)")
    args = parser.parse_args()
    backends = args.backend or ["sqlite", *(["postgresql"] if _postgres_reachable() else [])]
    reports = [measure(backend, args.requests, args.rounds) for backend in backends]
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%MZ")
    publish("\n".join([f"# In process {stamp}", "", *reports]), stamp, "inprocess")
    return 0


if __name__ == "__main__":
    sys.exit(main())
