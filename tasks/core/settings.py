"""The `migrations:` configuration: its defaults and a typed view of it.

Invoke merges defaults, `invoke.yaml`, `INVOKE_MIGRATIONS_*` variables and `-f` files; this module
only gives the merged mapping a shape. `alembic/env.py` loads the same files through
`load_project_settings()`, so plain `alembic` commands and the tasks never
disagree.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tasks.core.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]

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
# list, any string is; over a bool, anything but "0" and "" is true ("false" and "no" too).
# Numbers, lists and booleans are therefore strings here (and in invoke.yaml), so a variable
# arrives as text and `settings_from_mapping` judges it with a one-line ConfigError.
DEFAULTS: dict[str, Any] = {
    "metadata": "database.imports:import_all_models",
    "default_environment": "development",
    "environments": {
        "local": {
            "url_variable": "DATABASE_URL_LOCAL",
            "default_url": "sqlite:///local.sqlite3",
            "protected": "false",
            # A local URL must name this machine (loopback or a unix socket) unless this is
            # "true". A string, so INVOKE_MIGRATIONS_ENVIRONMENTS_LOCAL_ALLOW_REMOTE=false arrives
            # as text (Invoke casts a variable over a bool with `not in ("0", "")`: "false" is
            # True) and is parsed strictly by settings_from_mapping.
            "allow_remote": "false",
            # Nobody else depends on it: no owners, no audit table, no mandatory backups. Text,
            # parsed strictly (Invoke would cast "false" over a boolean default to True).
            "shared": "false",
        },
        # PostgreSQL session settings for migrations on shared databases: fail fast instead of
        # queueing traffic behind a lock, and never let one statement run unbounded.
        "development": {
            "url_variable": "DATABASE_URL_DEVELOPMENT",
            "protected": "false",
            "postgres_lock_timeout": "5s",
            "postgres_statement_timeout": "30min",
        },
        "staging": {
            "url_variable": "DATABASE_URL_STAGING",
            "protected": "false",
            "postgres_lock_timeout": "5s",
            "postgres_statement_timeout": "30min",
        },
        "production": {
            "url_variable": "DATABASE_URL_PRODUCTION",
            "protected": "true",
            "postgres_lock_timeout": "5s",
            "postgres_statement_timeout": "30min",
        },
    },
    "owners": "",
    "log_file": "logs/migrations.jsonl",
    "backup_dir": "backups",
    "connect_timeout": "5",
    "alembic_ini": "alembic.ini",
    # Overrides of the ini's script_location and version_locations (an adopted project's own
    # alembic/ folder); empty: the ini's values.
    "script_location": "",
    "version_locations": "",
    "dotenv_dir": ".",
    # Seconds a task waits for another runner's migration lock before giving up.
    "lock_timeout": "60",
    # Seconds a confirmation prompt waits for an answer; then the task refuses (exit 3). It
    # holds no lock while it waits, but a deploy nobody answers should end, not hang.
    "prompt_timeout": "600",
    # On PostgreSQL, autogenerate writes lock-safe revisions (tasks/migrate/safe_revisions.py):
    # "true" or "false", a string so that INVOKE_MIGRATIONS_SAFE_REVISIONS=false is not cast to
    # True.
    "safe_revisions": "true",
    # An async URL (postgresql+asyncpg, sqlite+aiosqlite): "sync" runs migrations on the sync
    # driver this project installs (psycopg2, sqlite3, PyMySQL); "keep" runs them on the URL's
    # own driver, inside an event loop as Alembic's async cookbook does.
    "driver": "sync",
    "ci": {
        # How many heads `ci.check` accepts (more than one only for deliberate branches).
        "allowed_heads": "1",
        # Server on which `ci.check` creates and drops throwaway PostgreSQL databases;
        # empty to run the SQLite legs only.
        # No user in the URL: libpq's own default, PGUSER or else the operating-system user.
        "postgres_url": "postgresql://127.0.0.1:5432/postgres",
        # Server on which throwaway MariaDB/MySQL databases are created and dropped (ci.check's
        # `mysql` dialect, squash proofs); empty: none.
        "mysql_url": "",
        # The start of every throwaway database's name (PostgreSQL database, SQLite folder).
        "database_prefix": "ci_check_",
        # Lint severities that fail `ci.check` (upgrade direction): destructive, warning.
        "fail_on": "destructive",
        # Dialects the stairway and models checks run on (sqlite, postgresql, mysql); empty:
        # those of the shared environments' URLs, SQLite when one of them is SQLite or none is
        # set (MariaDB/MySQL only with ci.mysql_url).
        "dialects": "",
        # A revision: it and older ones are trusted history (no downgrade, stairway or lint
        # check); heads and models are still checked. Empty: every revision is checked.
        "since": "",
        # A SQL file of the schema at `since` (pg_dump --schema-only): the trusted start is built
        # from it and stamped, for a history that cannot run from an empty database.
        "since_schema": "",
    },
    # How models and databases are compared, by autogenerate, check, sync and ci.check
    # (tasks/core/comparison.py). Hooks are `module:function` import paths; an adopted env.py's own
    # options win where it sets them.
    "compare": {
        "compare_type": "true",
        "compare_server_default": "true",
        "include_object": "",
        "include_name": "",
        "render_item": "",
        "user_module_prefix": "",
        "include_schemas": "false",
        # Differences never reported: `op:target` patterns, e.g. "modify_default:*.created_at".
        "ignore": "",
        # Whether an adopted env.py's own context.configure options are read and win.
        "from_env": "true",
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
    allow_remote: bool = False


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
    check_known_keys(raw)
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
        protected=_protected(name, values.get("protected", False)),
        shared=parse_flag(values.get("shared", True), f"environments.{name}.shared"),
        postgres_lock_timeout=_optional_text(values.get("postgres_lock_timeout")),
        postgres_statement_timeout=_optional_text(values.get("postgres_statement_timeout")),
        allow_remote=parse_flag(
            values.get("allow_remote", False), f"environments.{name}.allow_remote"
        ),
    )


def protection_variable(name: str) -> str:
    return f"INVOKE_MIGRATIONS_ENVIRONMENTS_{name.upper()}_PROTECTED"


def _protected(name: str, value: Any) -> bool:
    """`protected`, parsed explicitly. A YAML boolean (a team's own invoke.yaml or -f file) makes
    Invoke cast the variable itself, reading "false" and "no" as true; when the variable's own
    words disagree with what arrived, nobody can tell which was meant: an error, not a guess."""
    key = f"environments.{name}.protected"
    protected = parse_flag(value, key)
    variable = protection_variable(name)
    text = os.environ.get(variable)
    if isinstance(value, bool) and text is not None and parse_flag(text, key) != protected:
        raise ConfigError(
            f"{variable}={text!r} disagrees with migrations.{key} ({str(value).lower()}); "
            'write protected as a string ("true"/"false") in YAML files'
        )
    return protected


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


TRUE_WORDS = frozenset({"true", "yes", "1"})
FALSE_WORDS = frozenset({"false", "no", "0"})


def parse_flag(value: Any, key: str) -> bool:
    """A boolean from YAML (true/false) or text (true/false/yes/no/1/0, any case), and nothing
    else: an empty or unknown word is an error, never a guess (an empty variable must not
    unprotect production)."""
    if isinstance(value, bool):
        return value
    word = value.strip().lower() if isinstance(value, str) else None
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise ConfigError(f"migrations.{key} must be true or false (or yes/no, 1/0), not {value!r}")


def protection_override(
    settings: Settings, name: str, environ: Mapping[str, str] | None = None
) -> str | None:
    """Why `name`, protected by the project's own configuration (the defaults and the project's
    invoke.yaml), is unprotected in this run; None when it is not or never was protected.

    Dropping the typed confirmation and the mandatory backup of production through a variable
    or a `-f` file is allowed, but never silent: the task warns and the audit row says so.
    """
    if settings.environment(name).protected or not _project_protection(settings.root).get(name):
        return None
    environ = os.environ if environ is None else environ
    variable = protection_variable(name)
    if variable in environ:
        return f"{variable}={environ[variable]}"
    return "a configuration file given with -f (or another configuration source)"


def load_project_settings(root: Path = PROJECT_ROOT) -> Settings:
    """Settings for code outside Invoke (plain `alembic`), read the way Invoke reads them.

    The one use of Invoke below the CLI package (declared in pyproject.toml's import contract):
    Invoke's own loader reads the same files and variables in the same order as a task does.
    """
    from invoke import Config

    config = Config(defaults={"migrations": DEFAULTS}, project_location=root)
    config.load_project()
    config.load_shell_env()
    return settings_from_mapping(config.migrations, root)


@functools.cache
def _project_protection(root: Path) -> dict[str, bool]:
    """Which environments the defaults and the project's invoke.yaml protect (no variables, no
    -f file): the baseline an override is reported against."""
    from invoke import Config

    config = Config(defaults={"migrations": DEFAULTS}, project_location=root)
    config.load_project()
    environments = config.migrations.get("environments") or {}
    protected = {}
    for name, values in environments.items():
        try:
            raw = values.get("protected", False)
            protected[name] = parse_flag(raw, f"environments.{name}.protected")
        except (AttributeError, ConfigError):
            protected[name] = True  # unreadable: treat as protected, so an override is reported
    return protected


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


# --- strictness: every key must be one the defaults know ------------------------------------

# Keys an entry of a named map may carry beyond those the defaults' own entries show (an
# environment's optional settings appear on some default environments only).
ENTRY_KEYS: dict[str, frozenset[str]] = {
    "environments": frozenset(
        {
            "url_variable",
            "default_url",
            "protected",
            "postgres_lock_timeout",
            "postgres_statement_timeout",
        }
    ),
}


def check_known_keys(raw: Mapping[str, Any], defaults: Mapping[str, Any] = DEFAULTS) -> None:
    """Refuse any key the defaults do not know, naming it and the closest known one.

    A misspelled key (`owner:` for `owners:`) used to be ignored silently, switching a guard off:
    strictness fails closed. The schema *is* `DEFAULTS`, so a key added there is known at once.
    A mapping whose default entries are all mappings (`environments`) is a map of named entries:
    the names are free, each entry's keys are checked against the union of the default entries'
    keys (and `ENTRY_KEYS`). An empty default mapping holds names chosen by the user.
    """
    _check_section(raw, defaults, "migrations")


def _check_section(raw: Any, defaults: Mapping[str, Any], where: str) -> None:
    if not _is_mapping(raw):
        raise ConfigError(f"{where} must be a mapping")
    for key in raw:
        value = raw.get(key)  # Invoke's DataProxy hands out plain dicts through get()
        name = f"{where}.{key}"
        if key not in defaults:
            raise ConfigError(_unknown_key(str(key), defaults, where))
        default = defaults[key]
        if not isinstance(default, Mapping):
            continue
        if _is_named_map(default):
            _check_named_map(value, default, name, str(key))
        elif default:
            _check_section(value, default, name)
        elif not _is_mapping(value):
            raise ConfigError(f"{name} must be a mapping")


def _is_mapping(value: Any) -> bool:
    """Mappings, and Invoke's DataProxy (a mapping in all but its type)."""
    return isinstance(value, Mapping) or (hasattr(value, "keys") and hasattr(value, "get"))


def _is_named_map(default: Mapping[str, Any]) -> bool:
    return bool(default) and all(isinstance(entry, Mapping) for entry in default.values())


def _check_named_map(raw: Any, default: Mapping[str, Any], where: str, key: str) -> None:
    if not _is_mapping(raw):
        raise ConfigError(f"{where} must be a mapping")
    schema: dict[str, Any] = {name: None for name in ENTRY_KEYS.get(key, ())}
    for entry in default.values():
        schema.update(entry)
    for entry_name in raw:
        _check_section(raw.get(entry_name), schema, f"{where}.{entry_name}")


def _unknown_key(key: str, known: Mapping[str, Any], where: str) -> str:
    close = difflib.get_close_matches(key, [str(name) for name in known], n=1, cutoff=0.6)
    hint = f"did you mean {where}.{close[0]}?" if close else f"known: {', '.join(sorted(known))}"
    return f"unknown setting {where}.{key} ({hint})"


# Invoke reads `INVOKE_MIGRATIONS_<KEY_PATH>` only for keys the configuration already has and
# ignores any other name without a word, so a misspelt guard variable would silently do nothing.
VARIABLE_PREFIX = "INVOKE_MIGRATIONS_"


def setting_variables(raw: Mapping[str, Any], prefix: str = VARIABLE_PREFIX) -> set[str]:
    """Every `INVOKE_MIGRATIONS_*` name Invoke would read for the merged configuration."""
    names: set[str] = set()
    for key in raw:
        name = f"{prefix}{str(key).upper()}"
        value = raw.get(key)
        if _is_mapping(value):
            names |= setting_variables(value or {}, f"{name}_")
        else:
            names.add(name)
    return names


def check_setting_variables(raw: Mapping[str, Any], environ: Mapping[str, str]) -> None:
    """A set `INVOKE_MIGRATIONS_*` variable naming no setting is a one-line ConfigError naming
    it and the closest known variable."""
    known = setting_variables(raw)
    for name in sorted(environ):
        if name.startswith(VARIABLE_PREFIX) and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}?" if close else "no setting has that name"
            raise ConfigError(f"unknown setting variable {name} ({hint})")
