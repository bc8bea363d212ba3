"""Which database an environment means: variables, `.env` files and URL normalisation.

The order is the process environment, then `.env.<environment>`, then `.env`; a file never
overrides the process. A task's collection names its environment explicitly, so a stale
`ENVIRONMENT` in the shell only ever steers plain `alembic` commands.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.core.errors import ConfigError
from tasks.core.redaction import mask_url, register_url_secrets
from tasks.core.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

# Alembic drives a synchronous engine: async drivers map to the sync driver this project installs.
# A bare `postgresql://` means psycopg 3 to SQLAlchemy 2.1; the project installs psycopg2.
SYNC_DRIVERS: dict[str, str] = {
    "postgres": "postgresql+psycopg2",
    "postgresql": "postgresql+psycopg2",
    "postgresql+asyncpg": "postgresql+psycopg2",
    "postgresql+psycopg_async": "postgresql+psycopg2",
    "sqlite+aiosqlite": "sqlite",
    "sqlite+pysqlite": "sqlite",
    "mysql": "mysql+pymysql",
    "mysql+aiomysql": "mysql+pymysql",
    "mysql+asyncmy": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
    "mariadb+aiomysql": "mariadb+pymysql",
    "mariadb+asyncmy": "mariadb+pymysql",
}


@dataclass(frozen=True)
class Environment:
    """A resolved environment: its name, its database and where that came from."""

    name: str
    url: URL
    url_variable: str
    source: str  # "process environment", ".env.development", ".env" or "default"
    protected: bool
    # Whether others depend on it: owners, audit rows and shared-database prompts apply.
    shared: bool = True
    # PostgreSQL session settings migrations run under (None: the server's own).
    postgres_lock_timeout: str | None = None
    postgres_statement_timeout: str | None = None
    # Schema-per-tenant: the schema this target's tables and version table live in.
    schema: str | None = None
    # `migrations.driver: keep` and an async URL: the URL with the application's own driver,
    # which migrations run on (the tasks' own reads, lock and audit use `url`).
    migration_url: URL | None = None

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()


def resolve_environment(
    settings: Settings, name: str, environ: Mapping[str, str] | None = None
) -> Environment:
    """Find `name`'s URL or fail with one line naming the variable and the places searched."""
    env_settings = settings.environment(name)
    variable = env_settings.url_variable
    environ = os.environ if environ is None else environ
    raw, source = lookup_variable(settings.dotenv_dir, name, variable, environ)
    if raw is None and env_settings.default_url:
        raw, source = env_settings.default_url, "default"
    if raw is None:
        places = ", ".join(["the process environment", *_dotenv_files(name)])
        raise ConfigError(f"{variable} is not set for environment {name!r} (searched {places})")
    url = normalize_url(raw, variable, settings.root)
    return Environment(
        name,
        url,
        variable,
        source,
        env_settings.protected,
        env_settings.shared,
        env_settings.postgres_lock_timeout,
        env_settings.postgres_statement_timeout,
        migration_url=kept_async_url(raw, url, variable, settings.extra.get("driver")),
    )


# Async drivers and the module each needs (`migrations.driver: keep` runs migrations on them).
ASYNC_DRIVERS: dict[str, str] = {
    "postgresql+asyncpg": "asyncpg",
    "postgresql+psycopg_async": "psycopg",
    "sqlite+aiosqlite": "aiosqlite",
    "mysql+aiomysql": "aiomysql",
    "mysql+asyncmy": "asyncmy",
    "mariadb+aiomysql": "aiomysql",
    "mariadb+asyncmy": "asyncmy",
}


def driver_setting(value: object) -> str:
    """`migrations.driver`: `sync` (migrate on the installed sync driver) or `keep`."""
    text = str(value or "sync").strip().lower()
    if text not in {"sync", "keep"}:
        raise ConfigError(f"migrations.driver must be sync or keep, not {text!r}")
    return text


def kept_async_url(raw: str, url: URL, variable: str, setting: object) -> URL | None:
    """The URL with its own async driver when `migrations.driver` is `keep`, else None."""
    import importlib.util

    from sqlalchemy.engine import make_url

    if driver_setting(setting) != "keep":
        return None
    drivername = make_url(raw.strip()).drivername
    module = ASYNC_DRIVERS.get(drivername)
    if module is None:
        return None  # a sync driver already: nothing to keep
    if importlib.util.find_spec(module) is None or importlib.util.find_spec("greenlet") is None:
        raise ConfigError(
            f"{variable} uses {drivername} and migrations.driver is keep, but {module} (and "
            f"greenlet) are not installed: pip install {module} greenlet"
        )
    return url.set(drivername=drivername)


def url_is_set(settings: Settings, name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether `name` has a URL at all; reading tasks then mark the database's revision."""
    env_settings = settings.environment(name)
    environ = os.environ if environ is None else environ
    raw, _source = lookup_variable(settings.dotenv_dir, name, env_settings.url_variable, environ)
    return bool(raw or env_settings.default_url)


def environment_for_alembic(settings: Settings, environ: Mapping[str, str] | None = None) -> str:
    """Plain `alembic` commands follow ENVIRONMENT (default from the configuration)."""
    environ = os.environ if environ is None else environ
    return environ.get("ENVIRONMENT") or settings.default_environment


def normalize_url(raw: str, variable: str, root: Path) -> URL:
    """Parse a URL, map it to a synchronous driver and anchor relative SQLite paths at `root`."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(raw.strip())
    except (ArgumentError, ValueError):
        raise ConfigError(
            f"{variable} is not a valid database URL (expected driver://...)"
        ) from None
    register_url_secrets(url)
    url = url.set(drivername=SYNC_DRIVERS.get(url.drivername, url.drivername))
    _require_dialect(url, variable)
    if url.get_backend_name() == "sqlite":
        url = anchor_sqlite(url, root)
    return url


def _require_dialect(url: URL, variable: str) -> None:
    from sqlalchemy.exc import NoSuchModuleError

    try:
        dialect = url.get_dialect()
    except NoSuchModuleError:
        raise ConfigError(
            f"{variable} names an unknown database driver {url.drivername!r} ({mask_url(url)})"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as error:  # a known dialect whose driver the project does not install
        missing = getattr(error, "name", None) or str(error)
        raise ConfigError(
            f"{variable} asks for driver {url.drivername!r}, which is not installed "
            f"(no module {missing!r}); {mask_url(url)}"
        ) from None


def anchor_sqlite(url: URL, root: Path) -> URL:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return url
    path = Path(database).expanduser()
    return url if path.is_absolute() else url.set(database=str(root / path))


def variable_value(
    settings: Settings, name: str, variable: str, environ: Mapping[str, str] | None = None
) -> str | None:
    """A variable as the environment `name` sees it: the process, then `.env.<name>`, then
    `.env` (`MIGRATIONS_OPERATOR` is read like the URLs)."""
    raw, _source = lookup_variable(
        settings.dotenv_dir, name, variable, os.environ if environ is None else environ
    )
    return raw


def _dotenv_files(name: str) -> list[str]:
    return [f".env.{name}", ".env"]


def lookup_variable(
    directory: Path, name: str, variable: str, environ: Mapping[str, str]
) -> tuple[str | None, str]:
    value = environ.get(variable)
    if value:
        return value, "process environment"
    for filename in _dotenv_files(name):
        values = read_dotenv(directory / filename)
        if values.get(variable):
            return values[variable], filename
    return None, ""


def read_dotenv(path: Path) -> dict[str, str]:
    """Values of a `.env` file; a line python-dotenv cannot parse is an error, not a warning.

    A garbled line is often the very URL the operator meant to set, so guessing past it is the
    wrong default for a tool that picks databases.
    """
    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    try:
        if not path.is_file():  # EACCES on the folder raises here, not False
            return {}
        with path.open(encoding="utf-8") as stream:
            for binding in parse_stream(stream):
                if binding.error:
                    line = binding.original.line
                    raise ConfigError(f"{path.name} line {line}: cannot parse this line")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path.name}: cannot read ({type(error).__name__})") from None
    return {key: value for key, value in dotenv_values(path).items() if value is not None}
