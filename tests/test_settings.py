"""Settings: NICO_* variables, a `.env` file, and clear messages for values the service cannot
use."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nico_api.config import Settings, SettingsError


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "NICO_DB_POOL_SIZE",
            "0",
            "NICO_DB_POOL_SIZE: Input should be greater than or equal to 1, not '0'",
        ),
        (
            "NICO_DB_POOL_TIMEOUT",
            "0",
            "NICO_DB_POOL_TIMEOUT: Input should be greater than or equal to 0.001",
        ),
        (
            "NICO_DB_STATEMENT_TIMEOUT",
            "soon",
            "NICO_DB_STATEMENT_TIMEOUT: Input should be a valid number",
        ),
        (
            "NICO_DB_MAX_OVERFLOW",
            "-1",
            "NICO_DB_MAX_OVERFLOW: Input should be greater than or equal to 0",
        ),
        (
            "NICO_FLOW_FAILURE_RATE",
            "2",
            "NICO_FLOW_FAILURE_RATE: Input should be less than or equal to 1",
        ),
        (
            "NICO_FLOW_CONFLICTS",
            "drop",
            "NICO_FLOW_CONFLICTS: Input should be 'queue' or 'reject', not 'drop'",
        ),
        ("NICO_METRICS", "sometimes", "NICO_METRICS: Input should be a valid boolean"),
        (
            "NICO_METRICS_PORT",
            "70000",
            "NICO_METRICS_PORT: Input should be less than or equal to 65535",
        ),
    ],
)
def test_unusable_settings_are_refused_naming_the_variable(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({name: value})
    assert str(refused.value).startswith(message)


def test_every_unusable_setting_is_named_at_once() -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"NICO_DB_POOL_SIZE": "0", "NICO_BODY_TIMEOUT": "never"})
    assert "NICO_DB_POOL_SIZE:" in str(refused.value)
    assert "NICO_BODY_TIMEOUT:" in str(refused.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgres://nico:secret@db.example:5432/nico",
        "postgresql://nico:secret@db.example:5432/nico",
        "postgresql+psycopg://nico:secret@db.example:5432/nico",
    ],
)
def test_postgres_urls_in_every_spelling_use_psycopg(url: str) -> None:
    settings = Settings.from_env({"NICO_DATABASE_URL": url})
    assert settings.database_url == "postgresql+psycopg://nico:secret@db.example:5432/nico"


def test_the_embedded_database_is_in_the_instance_folder(tmp_path: Path) -> None:
    settings = Settings.from_env({"NICO_INSTANCE_DIR": str(tmp_path / "state")})
    assert settings.instance_dir == tmp_path / "state"
    assert settings.database_url == f"sqlite:///{tmp_path / 'state' / 'nico.db'}"


@pytest.fixture
def bare_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory of the test's own, and no NICO_* variable from the caller's shell."""
    for name in [name for name in os.environ if name.startswith("NICO_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_process_reads_the_environment_then_a_dot_env_file(
    bare_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp_path = bare_environment
    (tmp_path / ".env").write_text(
        "# a developer's local settings\n"
        "NICO_DB_POOL_SIZE=7\n"
        "NICO_FLOW_CONFLICTS=reject\n"
        "NICO_CORS_ORIGINS=https://console.example, http://localhost:3000\n"
        "OTHER_TOOL_SETTING=ignored\n"
    )
    monkeypatch.setenv("NICO_DB_POOL_SIZE", "9")
    settings = Settings.from_env()
    assert settings.db_pool_size == 9  # the environment wins over the file
    assert settings.flow_conflicts == "reject"
    assert settings.cors_origins == ("https://console.example", "http://localhost:3000")
    assert settings.instance_dir == tmp_path / "instance"


def test_an_unusable_value_in_dot_env_is_named(bare_environment: Path) -> None:
    (bare_environment / ".env").write_text("NICO_MAX_HEADER_BYTES=10\n")
    with pytest.raises(SettingsError, match="NICO_MAX_HEADER_BYTES: Input should be greater"):
        Settings.from_env()


def test_a_metrics_port_needs_the_metrics_on() -> None:
    with pytest.raises(SettingsError, match="NICO_METRICS_PORT is set while NICO_METRICS is off"):
        Settings.from_env({"NICO_METRICS": "off", "NICO_METRICS_PORT": "9100"})


def test_defaults_are_settled_as_read_values_are(bare_environment: Path) -> None:
    settings = Settings()
    assert settings.instance_dir == bare_environment / "instance"
    assert settings.database_url == f"sqlite:///{bare_environment / 'instance' / 'nico.db'}"
    assert settings.metrics_host == "127.0.0.1"
