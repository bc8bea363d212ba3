"""The `migrations:` configuration: its defaults and a typed view of it.

Invoke merges defaults, `invoke.yaml`, `INVOKE_MIGRATIONS_*` variables and `-f` files; this module
only gives the merged mapping a shape. `alembic/env.py` loads the same files through
`tasks.context.load_project_settings()`, so plain `alembic` commands and the tasks never
disagree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tasks.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Collection name -> environment name. Collections are built at import time, before Invoke reads
# any configuration, so this mapping is fixed in code; everything about each environment is not.
COLLECTIONS: dict[str, str] = {
    "local": "local",
    "dev": "development",
    "staging": "staging",
    "prod": "production",
}

# Invoke casts an INVOKE_MIGRATIONS_* variable to the type of the value it overrides, inside its
# own config loading, before any task runs: over an int, "2.5" or "abc" is a traceback; over a
# list, any string is. Numbers and lists are therefore strings here (and in invoke.yaml), so a
# variable arrives as text and `settings_from_mapping` judges it with a one-line ConfigError.
DEFAULTS: dict[str, Any] = {
    "metadata": "database.imports:import_all_models",
    "default_environment": "development",
    "environments": {
        "local": {
            "url_variable": "DATABASE_URL_LOCAL",
            "default_url": "sqlite:///local.sqlite3",
            "protected": False,
            # Nobody else depends on it: no owners, no audit table, no mandatory backups.
            "shared": False,
        },
        # PostgreSQL session settings for migrations on shared databases: fail fast instead of
        # queueing traffic behind a lock, and never let one statement run unbounded.
        "development": {
            "url_variable": "DATABASE_URL_DEVELOPMENT",
            "protected": False,
            "postgres_lock_timeout": "5s",
            "postgres_statement_timeout": "30min",
        },
        "staging": {
            "url_variable": "DATABASE_URL_STAGING",
            "protected": False,
            "postgres_lock_timeout": "5s",
            "postgres_statement_timeout": "30min",
        },
        "production": {
            "url_variable": "DATABASE_URL_PRODUCTION",
            "protected": True,
            "postgres_lock_timeout": "5s",
            "postgres_statement_timeout": "30min",
        },
    },
    "owners": "",
    "log_file": "logs/migrations.jsonl",
    "backup_dir": "backups",
    "connect_timeout": "5",
    "alembic_ini": "alembic.ini",
    "dotenv_dir": ".",
    # Seconds a task waits for another runner's migration lock before giving up.
    "lock_timeout": "60",
    "ci": {
        # How many heads `ci.check` accepts (more than one only for deliberate branches).
        "allowed_heads": "1",
        # Server on which `ci.check` creates and drops throwaway PostgreSQL databases;
        # empty to run the SQLite legs only.
        "postgres_url": "postgresql://postgres@127.0.0.1:5432/postgres",
        # Lint severities that fail `ci.check` (upgrade direction): destructive, warning.
        "fail_on": "destructive",
    },
    # Fleets: many databases (tenants, shards, schemas) migrated by one command (`invoke fleet.*`).
    # Each `fleets.<name>` has urls, urls_file, query or schemas; see the README.
    "fleets": {},
    "lint": {
        # Rule names (ours or squawk's) never reported; a list or a comma-separated string.
        "ignore": "prefer-robust-stmts,prefer-bigint-over-int,prefer-bigint-over-smallint,"
        "prefer-identity",
    },
}


@dataclass(frozen=True)
class EnvironmentSettings:
    name: str
    url_variable: str
    default_url: str | None = None
    protected: bool = False
    shared: bool = True
    postgres_lock_timeout: str | None = None
    postgres_statement_timeout: str | None = None


@dataclass(frozen=True)
class Settings:
    metadata: str
    default_environment: str
    environments: dict[str, EnvironmentSettings]
    owners: tuple[str, ...] = ()
    log_file: Path = PROJECT_ROOT / "logs" / "migrations.jsonl"
    backup_dir: Path = PROJECT_ROOT / "backups"
    connect_timeout: float = 5
    alembic_ini: Path = PROJECT_ROOT / "alembic.ini"
    dotenv_dir: Path = PROJECT_ROOT
    lock_timeout: float = 60
    lint_ignore: frozenset[str] = frozenset()
    root: Path = PROJECT_ROOT
    extra: dict[str, Any] = field(default_factory=dict)

    def environment(self, name: str) -> EnvironmentSettings:
        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(sorted(self.environments))
            raise ConfigError(f"unknown environment {name!r} (configured: {known})") from None

    def path(self, value: str | Path) -> Path:
        """Relative paths in the configuration are relative to the project, not the shell."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.root / path


def settings_from_mapping(raw: Mapping[str, Any], root: Path = PROJECT_ROOT) -> Settings:
    """Validate the merged `migrations:` mapping; a wrong value is a one-line ConfigError."""
    environments = {
        name: _environment(name, values)
        for name, values in _mapping(raw.get("environments", {}), "environments").items()
    }
    for name in COLLECTIONS.values():
        if name not in environments:
            raise ConfigError(f"migrations.environments.{name} is missing from the configuration")
    base = Settings(metadata="", default_environment="", environments={}, root=root)
    # Sections without a typed field (`ci`, a team's own keys) stay available in `extra`.
    typed = {field.name for field in fields(Settings)} | {"lint"}
    return Settings(
        metadata=_text(raw.get("metadata"), "metadata"),
        default_environment=_text(raw.get("default_environment"), "default_environment"),
        environments=environments,
        owners=_owners(raw.get("owners")),
        log_file=base.path(_text(raw.get("log_file"), "log_file")),
        backup_dir=base.path(_text(raw.get("backup_dir"), "backup_dir")),
        connect_timeout=_number(raw.get("connect_timeout"), "connect_timeout"),
        alembic_ini=base.path(_text(raw.get("alembic_ini"), "alembic_ini")),
        dotenv_dir=base.path(_text(raw.get("dotenv_dir"), "dotenv_dir")),
        lock_timeout=_number(raw.get("lock_timeout"), "lock_timeout", allow_zero=True),
        lint_ignore=frozenset(
            _names(_mapping(raw.get("lint", {}), "lint").get("ignore"), "lint.ignore")
        ),
        root=root,
        extra={key: value for key, value in raw.items() if key not in typed},
    )


def _environment(name: str, values: Any) -> EnvironmentSettings:
    values = _mapping(values, f"environments.{name}")
    default_url = values.get("default_url")
    return EnvironmentSettings(
        name=name,
        url_variable=_text(values.get("url_variable"), f"environments.{name}.url_variable"),
        default_url=str(default_url) if default_url else None,
        protected=_flag(values.get("protected", False), f"environments.{name}.protected"),
        shared=_flag(values.get("shared", True), f"environments.{name}.shared"),
        postgres_lock_timeout=_optional_text(values.get("postgres_lock_timeout")),
        postgres_statement_timeout=_optional_text(values.get("postgres_statement_timeout")),
    )


def _mapping(value: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"migrations.{key} must be a mapping")
    return value


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"migrations.{key} must be a non-empty string")
    return value.strip()


def _number(value: Any, key: str, *, allow_zero: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"migrations.{key} must be a number") from None
    if not math.isfinite(number):
        raise ConfigError(f"migrations.{key} must be a finite number")
    if number < 0 or (number == 0 and not allow_zero):
        raise ConfigError(f"migrations.{key} must be positive")
    return number


def _flag(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "yes", "1", "false", "no", "0", ""}:
        return value.lower() in {"true", "yes", "1"}
    raise ConfigError(f"migrations.{key} must be true or false")


def _optional_text(value: Any) -> str | None:
    return str(value).strip() or None if value not in (None, False) else None


def _names(value: Any, key: str) -> tuple[str, ...]:
    """Lists come from YAML as lists and from environment variables as comma-separated strings."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ConfigError(f"migrations.{key} must be a list or a comma-separated string")
    return tuple(str(item).strip() for item in items if str(item).strip())


def _owners(value: Any) -> tuple[str, ...]:
    return tuple(owner.lower() for owner in _names(value, "owners"))
