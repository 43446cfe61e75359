"""Settings, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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
    dev_issuer: str = "nico-dev"
    dev_audience: str = "nico-api"

    @property
    def dev_key_path(self) -> Path:
        return self.instance_dir / "dev-issuer-key.pem"

    @classmethod
    def from_env(cls, environ: os._Environ[str] | dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        instance_dir = Path(env.get("NICO_INSTANCE_DIR", "instance")).resolve()
        database_url = env.get("NICO_DATABASE_URL") or f"sqlite:///{instance_dir / 'nico.db'}"
        return cls(
            instance_dir=instance_dir,
            database_url=database_url,
            validate_responses=env.get("NICO_VALIDATE_RESPONSES", "").lower() in _TRUE,
            auth_config=Path(env["NICO_AUTH_CONFIG"]) if env.get("NICO_AUTH_CONFIG") else None,
        )
