"""Settings, read once from the environment; and how a file the service reads is faulted."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from pydantic import ValidationError

N = TypeVar("N", int, float)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SPEC_PATH = PROJECT_ROOT / "openapi.yaml"

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Where the service keeps its state and how strictly it checks itself."""

    instance_dir: Path
    database_url: str
    validate_responses: bool = False
    auth_config: Path | None = None
    # Storage: a bounded pool and bounded waits, so an ailing database means a quick 503.
    db_pool_size: int = 4
    db_max_overflow: int = 0
    db_pool_timeout: float = 5.0
    db_connect_timeout: float = 5.0
    db_statement_timeout: float = 5.0
    # A request's whole database work, answered 503 past it even if the database never answers.
    db_request_timeout: float = 10.0
    # The HTTP edge: what a client can make the server read, and how long a request's head
    # (request line and headers) may take to arrive, idle connections included.
    max_body_bytes: int = 1 << 20
    max_header_bytes: int = 64 << 10
    header_timeout: float = 10.0
    keepalive_timeout: float = 5.0
    # The simulated NICo Flow: how long each step of a task takes, how often it looks for due
    # work, how long a task may wait in its rack's queue, and how often a component fails.
    flow_step_seconds: float = 2.0
    flow_poll_seconds: float = 0.2
    flow_queue_timeout: float = 3600.0
    flow_failure_rate: float = 0.0
    flow_seed: int = 0
    # What a rack with a conflicting active task does with a new one: queue it, or refuse it.
    flow_conflicts: str = "queue"
    # The origins whose pages may call the API from a browser (CORS); none by default.
    cors_origins: tuple[str, ...] = ()
    dev_issuer: str = "nico-dev"
    dev_audience: str = "nico-api"

    @property
    def dev_key_path(self) -> Path:
        return self.instance_dir / "dev-issuer-key.pem"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        rate = env.get("NICO_FLOW_FAILURE_RATE")
        if rate and _number(env, "NICO_FLOW_FAILURE_RATE", 0.0, 0) > 1:
            raise SettingsError(f"NICO_FLOW_FAILURE_RATE must be at most 1, not {rate!r}")
        conflicts = env.get("NICO_FLOW_CONFLICTS") or "queue"
        if conflicts not in ("queue", "reject"):
            raise SettingsError(f"NICO_FLOW_CONFLICTS must be queue or reject, not {conflicts!r}")
        instance_dir = Path(env.get("NICO_INSTANCE_DIR", "instance")).resolve()
        database_url = env.get("NICO_DATABASE_URL") or f"sqlite:///{instance_dir / 'nico.db'}"
        return cls(
            instance_dir=instance_dir,
            database_url=database_url,
            validate_responses=env.get("NICO_VALIDATE_RESPONSES", "").lower() in _TRUE,
            auth_config=Path(env["NICO_AUTH_CONFIG"]) if env.get("NICO_AUTH_CONFIG") else None,
            flow_conflicts=conflicts,
            cors_origins=_origins(env.get("NICO_CORS_ORIGINS", "")),
            **{
                name: _number(env, f"NICO_{name.upper()}", getattr(cls, name), least)
                for name, least in _LEAST.items()
            },
        )


def document_problems(exc: ValidationError, document: dict[str, Any], label: str) -> str:
    """Each problem of a configuration or data file, naming the record (by position and
    `label`) and the field: `tasks[3] (id 1f0c...) field 'status': ...`."""
    problems = []
    for error in exc.errors():
        loc = error["loc"]
        where = ".".join(str(part) for part in loc)
        if len(loc) >= 2 and isinstance(loc[1], int):
            record = document[loc[0]][loc[1]]
            name = record.get(label) if isinstance(record, dict) else None
            field = ".".join(str(part) for part in loc[2:]) or "(record)"
            where = f"{loc[0]}[{loc[1]}]" + (f" ({label} {name})" if name else "")
            where += f" field '{field}'"
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)


# The numeric settings, each read from NICO_<NAME> and no smaller than its least value.
_LEAST: dict[str, float] = {
    "db_pool_size": 1,
    "db_max_overflow": 0,
    "db_pool_timeout": 0.001,
    "db_connect_timeout": 0.001,
    "db_statement_timeout": 0.001,
    "db_request_timeout": 0.001,
    "max_body_bytes": 1,
    "max_header_bytes": 1024,
    "header_timeout": 0.001,
    "keepalive_timeout": 0.001,
    "flow_step_seconds": 0,
    "flow_poll_seconds": 0.001,
    "flow_queue_timeout": 0,
    "flow_failure_rate": 0,
    "flow_seed": 0,
}


def storable(text: str) -> bool:
    """Text that every backend stores as it is: no NUL, no lone surrogate (PostgreSQL refuses
    both)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class InvalidInputError(ValueError):
    """A setting or a file the service cannot use: its message says which, and why."""


class SettingsError(InvalidInputError):
    """An environment variable holds a value the service cannot use."""


_ORIGIN = re.compile(r"https?://[^/\s?#]+")


def _origins(text: str) -> tuple[str, ...]:
    """NICO_CORS_ORIGINS: comma-separated origins (`https://app.example:8443`), or `*`."""
    origins = tuple(origin.strip().rstrip("/") for origin in text.split(",") if origin.strip())
    for origin in origins:
        if origin != "*" and not _ORIGIN.fullmatch(origin):
            raise SettingsError(
                f"NICO_CORS_ORIGINS: {origin!r} is not an origin such as https://app.example:8443"
            )
    return origins


def _number(env: Mapping[str, str], name: str, default: N, minimum: float) -> N:
    """The setting's value in the environment, of its default's type; the default when unset."""
    text = env.get(name)
    if not text:
        return default
    kind = type(default)
    try:
        value = kind(text)
    except ValueError:
        raise SettingsError(f"{name} must be a {kind.__name__}, not {text!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum:g}, not {text!r}")
    return value
