"""Settings, read once from the environment and a `.env` file; and how a file the service reads
is faulted."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# The spec travels inside the package (in the repository, a link to the top-level openapi.yaml).
SPEC_PATH = Path(__file__).resolve().parent / "openapi.yaml"
# Where `serve`'s workers write their metrics (prometheus-client's multiprocess folder); named
# here, as prometheus-client must not be imported before `serve` sets it.
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# libyaml's parser where PyYAML was built with it: about 15 times faster on the spec.
SPEC_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def spec_document(text: str | bytes | None = None) -> dict[str, Any]:
    """openapi.yaml as a document (or `text`, another spec's), read with SPEC_LOADER."""
    return yaml.load(SPEC_PATH.read_bytes() if text is None else text, Loader=SPEC_LOADER)


PREFIX = "NICO_"
Seconds = Annotated[float, Field(ge=0.001)]


class Settings(BaseModel):
    """Where the service keeps its state and how strictly it checks itself. Each field is read
    from NICO_<NAME> (`Settings.from_env`)."""

    # Defaults are validated too: the instance folder is absolute however it was given.
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    instance_dir: Path = Path("instance")
    # Default: the embedded SQLite file in the instance folder.
    database_url: str = ""
    validate_responses: bool = False
    auth_config: Path | None = None
    # Storage: a bounded pool and bounded waits, so an ailing database means a quick 503.
    db_pool_size: int = Field(4, ge=1)
    db_max_overflow: int = Field(0, ge=0)
    db_pool_timeout: Seconds = 5.0
    db_connect_timeout: Seconds = 5.0
    db_statement_timeout: Seconds = 5.0
    # A request's whole database work, answered 503 past it even if the database never answers.
    db_request_timeout: Seconds = 10.0
    # The HTTP edge: what a client can make the server read (a request's head, its request line
    # and headers, is bounded by uvicorn; its body by the app), and how long it may take.
    max_body_bytes: int = Field(1 << 20, ge=1)
    max_header_bytes: int = Field(64 << 10, ge=1024)
    # From the end of a request's head to the end of its body; past it, 408 and a closed
    # connection.
    body_timeout: Seconds = 10.0
    keepalive_timeout: Seconds = 5.0
    # The simulated NICo Flow: how long each step of a task takes, how often it looks for due
    # work, how long a task may wait in its rack's queue, and how often a component fails.
    flow_step_seconds: float = Field(2.0, ge=0)
    flow_poll_seconds: Seconds = 0.2
    flow_queue_timeout: float = Field(3600.0, ge=0)
    flow_failure_rate: float = Field(0.0, ge=0, le=1)
    flow_seed: int = Field(0, ge=0)
    # How often Flow's promoter sweeps every rack, ending waiting tasks past their queue time;
    # between sweeps a task expires when a task on its rack ends. Production sweeps each 300 s:
    # the default ends an expired task within about a second instead, as a client expects.
    flow_promoter_sweep_seconds: Seconds = 1.0
    # What a rack with a conflicting active task does with a new one: queue it, or refuse it.
    flow_conflicts: Literal["queue", "reject"] = "queue"
    # The origins whose pages may call the API from a browser (CORS); none by default.
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()
    # Prometheus metrics: on /metrics of the API's port, on a port of their own, or off.
    metrics: bool = True
    metrics_port: int | None = Field(None, ge=1, le=65535)
    # The metrics port's address: this machine alone unless opened on purpose.
    metrics_host: str = "127.0.0.1"
    dev_issuer: str = "nico-dev"
    dev_audience: str = "nico-api"

    @property
    def db_capacity(self) -> int:
        """How many requests may use the database at once: the pool's connections in all."""
        return max(1, self.db_pool_size + self.db_max_overflow)

    @property
    def dev_key_path(self) -> Path:
        return self.instance_dir / "dev-issuer-key.pem"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The process's settings: NICO_* variables, then `.env` in the working directory; or,
        given `environ`, that mapping alone. An unusable value raises SettingsError naming it."""
        try:
            if environ is None:
                return Environment()
            return cls.model_validate(
                {
                    name.removeprefix(PREFIX).lower(): value
                    for name, value in environ.items()
                    if name.startswith(PREFIX)
                    and value
                    and name.removeprefix(PREFIX).lower() in cls.model_fields
                }
            )
        except ValidationError as exc:
            raise SettingsError(_problems(exc)) from None

    @field_validator("instance_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.resolve()

    @field_validator("database_url")
    @classmethod
    def _driver(cls, value: str) -> str:
        # postgres:// and postgresql:// (as Heroku, libpq and most tools write them) use psycopg.
        scheme, sep, rest = value.partition("://")
        if sep and scheme in ("postgres", "postgresql"):
            return f"postgresql+psycopg://{rest}"
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: Any) -> Any:
        """NICO_CORS_ORIGINS: comma-separated origins (`https://app.example:8443`), or `*`."""
        if isinstance(value, str):
            value = [origin for origin in value.split(",") if origin.strip()]
        origins = tuple(str(origin).strip().rstrip("/") for origin in value)
        for origin in origins:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(f"{origin!r} is not an origin such as https://app.example:8443")
        return origins

    @model_validator(mode="after")
    def _metrics_on_for_a_port(self) -> Settings:
        if self.metrics_port is not None and not self.metrics:
            raise ValueError("NICO_METRICS_PORT is set while NICO_METRICS is off")
        return self

    @model_validator(mode="after")
    def _embedded_database(self) -> Settings:
        if not self.database_url:
            # Frozen: the one derived default is set once, here.
            object.__setattr__(self, "database_url", f"sqlite:///{self.instance_dir / 'nico.db'}")
        return self


class Environment(BaseSettings, Settings):
    """Settings as a process finds them: NICO_* environment variables first, then `.env`."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_file=".env", env_ignore_empty=True, extra="ignore", frozen=True
    )


def _problems(exc: ValidationError) -> str:
    """`NICO_DB_POOL_SIZE: Input should be greater than or equal to 1, not '0'`, one per setting."""
    problems = []
    for error in exc.errors():
        name = PREFIX + str(error["loc"][0]).upper() if error["loc"] else "settings"
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{name}: {message}, not {error['input']!r}")
    return "; ".join(problems)


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
