"""The application factory: one runtime, and the spec served over it."""

from __future__ import annotations

import gc

from nico_api.config import Settings
from nico_api.web import framework
from nico_api.web.framework import NICoApp
from nico_api.web.runtime import Runtime


def create_app(settings: Settings | None = None) -> NICoApp:
    """An app with its own runtime (`app.runtime`), built from `settings` or the environment.
    It changes nothing outside itself; the one process-wide setting the app needs, Starlette's
    `path` convertor, is registered once, when `nico_api.web.framework` is imported."""
    return framework.build_app(Runtime.build(settings or Settings.from_env()))


def tune_process() -> None:
    """Once per serving process, after its app is built: the app's long-lived objects (spec,
    validators, routes) stay out of every later garbage collection, which would otherwise walk
    them all and stall requests; and young collections run less often, since each request
    allocates many short-lived objects."""
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def serving_app() -> NICoApp:
    """The app of a `nico-api serve` worker: built from the environment, the process tuned."""
    app = create_app()
    tune_process()
    return app
