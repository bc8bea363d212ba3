"""Which database an environment means: variables, `.env` files and URL normalisation.

The order is the process environment, then `.env.<environment>`, then `.env`; a file never
overrides the process. A task's collection names its environment explicitly, so a stale
`ENVIRONMENT` in the shell only ever steers plain `alembic` commands.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core.errors import ConfigError, Refused
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
    raw, source = _lookup(settings.dotenv_dir, name, variable, environ)
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
    raw, _source = _lookup(settings.dotenv_dir, name, env_settings.url_variable, environ)
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
        url = _anchor_sqlite(url, root)
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


def _anchor_sqlite(url: URL, root: Path) -> URL:
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
    raw, _source = _lookup(
        settings.dotenv_dir, name, variable, os.environ if environ is None else environ
    )
    return raw


def _dotenv_files(name: str) -> list[str]:
    return [f".env.{name}", ".env"]


def _lookup(
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


# --- Which database a URL reaches, and which environment's guards it therefore needs ----------
#
# A collection's guards (owners, typed confirmation, backup, audit) belong to a database, not to
# a variable name: `DATABASE_URL_LOCAL=$DATABASE_URL_PRODUCTION invoke local.reset` must not
# empty production around them. The identity below is what a URL connects to (family, server
# endpoints, ports, database; for SQLite the file itself), read the way the drivers read it
# (query parameters override the URL, libpq's PG* variables fill in what it omits). Whatever it
# cannot pin down (a pg_service entry, a MySQL option file) matches every database of its kind:
# a guard that cannot tell must assume the worst.

ANY = "*"  # an endpoint or database we cannot pin down: matches any
ANY_FAMILY = "any kind"  # a URL whose kind of database cannot be read: matches every kind
THIS_MACHINE = "this machine"  # loopback addresses, unix sockets, this host's own addresses
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}
_FAMILIES = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
    "sqlite": "sqlite",
}


@dataclass(frozen=True)
class DatabaseIdentity:
    """What a URL connects to; two identities that `same_database` says overlap may be one."""

    family: str
    endpoints: frozenset[str] = frozenset()  # hosts: THIS_MACHINE, addresses, names or ANY
    ports: frozenset[int] = frozenset()  # empty: any port (a MySQL unix socket names none)
    database: str | None = None  # case-folded; None: any database on the server
    files: frozenset[str] = frozenset()  # SQLite: real path and device:inode; empty: in memory


@dataclass(frozen=True)
class _ServerTarget:
    """A server URL as its driver will read it, before names are resolved."""

    family: str
    hosts: tuple[str, ...]  # "" is a unix socket
    ports: tuple[int, ...]
    database: str | None
    understood: bool = True


def database_identity(url: URL, environ: Mapping[str, str] | None = None) -> DatabaseIdentity:
    """The database `url` reaches (see the section comment for how it is read)."""
    environ = os.environ if environ is None else environ
    family = _family(url)
    if family == "sqlite":
        return DatabaseIdentity(family, files=_sqlite_files(url))
    if family == ANY_FAMILY:
        return _identity_of_any_kind(url, environ)
    target = _server_target(url, environ)
    if not target.understood:
        return DatabaseIdentity(family, frozenset({ANY}))
    endpoints = frozenset().union(*(_endpoints(host) for host in target.hosts))
    database = target.database.casefold() if target.database else None
    return DatabaseIdentity(family, endpoints, frozenset(target.ports), database)


def _identity_of_any_kind(url: URL, environ: Mapping[str, str]) -> DatabaseIdentity:
    """A URL whose scheme names no kind of database we know (`postgresq1://`): it is compared
    with every kind by what can be read of it (hosts, ports, database, or a file)."""
    target = _server_from_parts(
        ANY_FAMILY,
        _query(url, "host", split=True) or _split_hosts(url.host) or [""],
        _query(url, "port", split=True) or ([str(url.port)] if url.port else []),
        url.database or "",
    )
    endpoints = frozenset().union(*(_endpoints(host) for host in target.hosts))
    files = _sqlite_files(url) if url.database and not url.host else frozenset()
    database = target.database.casefold() if target.database else None
    return DatabaseIdentity(ANY_FAMILY, endpoints, frozenset(target.ports), database, files)


def unreadable_identity() -> DatabaseIdentity:
    """What a value that cannot be read as a database URL may reach: every database."""
    return DatabaseIdentity(ANY_FAMILY, frozenset({ANY}), frozenset(), None, frozenset({ANY}))


def same_database(a: DatabaseIdentity, b: DatabaseIdentity) -> bool:
    """Whether `a` and `b` may be the same database: when in doubt, they are."""
    if ANY_FAMILY in (a.family, b.family):
        known = b.family if a.family == ANY_FAMILY else a.family
        if known == ANY_FAMILY:
            return True
        a, b = (
            DatabaseIdentity(known, a.endpoints, a.ports, a.database, a.files),
            DatabaseIdentity(known, b.endpoints, b.ports, b.database, b.files),
        )
    if a.family != b.family:
        return False
    if a.family == "sqlite":
        if not a.files or not b.files:  # in memory: private to its connection
            return False
        return ANY in a.files or ANY in b.files or bool(a.files & b.files)
    endpoints = ANY in a.endpoints or ANY in b.endpoints or bool(a.endpoints & b.endpoints)
    ports = not a.ports or not b.ports or bool(a.ports & b.ports)
    names = a.database is None or b.database is None or a.database == b.database
    return endpoints and ports and names


def is_on_this_machine(url: URL, environ: Mapping[str, str] | None = None) -> bool:
    """Whether every host the URL may reach is loopback (127.0.0.0/8, ::1, localhost) or a socket.

    Deliberately literal: no name resolution, so a DNS answer never makes a remote server local.
    """
    if _family(url) == "sqlite":
        return True
    target = _server_target(url, os.environ if environ is None else environ)
    return target.understood and all(_is_loopback_literal(host) for host in target.hosts)


def server_hosts(url: URL, environ: Mapping[str, str] | None = None) -> str:
    """The hosts a server URL reaches, for a message (never the password)."""
    target = _server_target(url, os.environ if environ is None else environ)
    if not target.understood:
        return "a server named outside the URL"
    return ", ".join(host or "a unix socket" for host in target.hosts)


def _family(url: URL) -> str:
    """The kind of database: ours, another dialect SQLAlchemy knows (its own kind), or
    ANY_FAMILY for a scheme nobody knows (a misspelling could be any kind)."""
    backend = url.get_backend_name()
    if backend in _FAMILIES:
        return _FAMILIES[backend]
    from sqlalchemy.dialects import registry

    try:
        registry.load(backend)
    except Exception:  # NoSuchModuleError, or a broken plugin: nothing says what it is
        return ANY_FAMILY
    return backend


def _split_hosts(host: str | None) -> list[str]:
    """libpq's host list in the URL's host part (`h1,h2`); empty items are unix sockets."""
    return [] if host is None else [part.strip() for part in host.split(",")]


def _sqlite_files(url: URL) -> frozenset[str]:
    """The file a SQLite URL opens: real path (symlinks resolved) and device:inode (hard links)."""
    database = url.database or ""
    if database.startswith("file:"):  # a SQLite URI: file:path?mode=...
        from urllib.parse import parse_qs, unquote, urlsplit

        parts = urlsplit(database)
        database = unquote(parts.path)
        if "memory" in parse_qs(parts.query).get("mode", []):
            database = ""
    if not database or database == ":memory:":
        return frozenset()  # a private in-memory database is nobody else's
    try:
        path = Path(database).expanduser().resolve()
    except (OSError, RuntimeError):  # a symlink loop: no file anyone can name, so any file
        return frozenset({ANY})
    files = {str(path)}
    with contextlib.suppress(OSError):
        status = path.stat()
        files.add(f"inode {status.st_dev}:{status.st_ino}")
    return frozenset(files)


def _server_target(url: URL, environ: Mapping[str, str]) -> _ServerTarget:
    family = _family(url)
    if family == "postgresql":
        return _postgres_target(url, environ)
    if family == "mysql":
        return _mysql_target(url)
    # A dialect this module does not know how to read: it could be anything of its kind.
    return _ServerTarget(family, (url.host or "",), (), url.database, understood=False)


def _query(url: URL, *keys: str, split: bool = False) -> list[str]:
    """Every value of the query parameters `keys` (repeated, or with `split` comma-separated as
    libpq lists hosts and ports), in order."""
    values: list[str] = []
    for key in keys:
        raw = url.query.get(key)
        items = (raw,) if isinstance(raw, str) else (raw or ())
        for item in items:
            parts = str(item).split(",") if split else [str(item)]
            values.extend(part.strip() for part in parts)
    return values


def _postgres_target(url: URL, environ: Mapping[str, str]) -> _ServerTarget:
    """libpq's reading: query parameters override the URL, PG* variables fill in the rest."""
    if _query(url, "service") or environ.get("PGSERVICE") or environ.get("PGSERVICEFILE"):
        return _ServerTarget("postgresql", (), (), None, understood=False)
    hosts: list[str] = []
    ports: list[str] = _query(url, "port", split=True)
    for value in _query(url, "host", split=True):
        host, _, port = _split_host_port(value)
        hosts.append(host)
        ports.extend([port] if port else [])
    if url.host:
        hosts.extend(_split_hosts(url.host))  # libpq tries each: any of them counts
    if not hosts:
        hosts = _listed(environ, "PGHOST") or [""]
    # hostaddr, when given, is where libpq connects, whatever the host name says.
    hosts += _query(url, "hostaddr", split=True) or _listed(environ, "PGHOSTADDR")
    if url.port:
        ports.append(str(url.port))
    if not ports:
        ports = _listed(environ, "PGPORT") or [str(_DEFAULT_PORTS["postgresql"])]
    database = (_query(url, "dbname") or [url.database or environ.get("PGDATABASE") or ""])[-1]
    return _server_from_parts("postgresql", hosts, ports, database)


def _listed(environ: Mapping[str, str], variable: str) -> list[str]:
    """A libpq variable's comma-separated values; none when it is unset or empty."""
    return [part.strip() for part in environ.get(variable, "").split(",") if part.strip()]


def _mysql_target(url: URL) -> _ServerTarget:
    """PyMySQL's reading: query parameters override the URL; option files could say anything."""
    if _query(url, "read_default_file", "read_default_group"):
        return _ServerTarget("mysql", (), (), None, understood=False)
    sockets = _query(url, "unix_socket")
    hosts = _query(url, "host", split=True) or _split_hosts(url.host) or ["localhost"]
    ports = _query(url, "port", split=True) or [str(url.port or _DEFAULT_PORTS["mysql"])]
    database = (_query(url, "db", "database") or [url.database or ""])[-1]
    if sockets:  # a socket names no port: any local server of the family may be behind it
        return _server_from_parts("mysql", [""], [], database)
    return _server_from_parts("mysql", hosts, ports, database)


def _server_from_parts(
    family: str, hosts: list[str], ports: list[str], database: str
) -> _ServerTarget:
    hosts = [host.strip() for host in hosts]
    hosts = ["" if host.startswith(("/", "@")) else host for host in hosts]  # socket directories
    try:
        numbers = tuple(int(port) for port in ports if port.strip())
    except ValueError:  # a port that cannot be read could be any port; hosts still count
        numbers = ()
    return _ServerTarget(family, tuple(hosts) or ("",), numbers, database.strip() or None)


def _split_host_port(value: str) -> tuple[str, str, str]:
    """`host:port` (or `[v6]:port`) inside a query parameter, as SQLAlchemy's psycopg2 reads it."""
    if value.startswith("/") or (value.count(":") > 1 and not value.startswith("[")):
        return value, "", ""
    host, sep, port = value.rpartition(":")
    if sep and port.isdigit():
        return host.strip("[]"), sep, port
    return value.strip("[]"), "", ""


def _is_loopback_literal(host: str) -> bool:
    import ipaddress

    name = host.strip().strip("[]").lower().rstrip(".")
    if name in ("", "localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


def _endpoints(host: str) -> frozenset[str]:
    """Comparable endpoints for a host: THIS_MACHINE, addresses it resolves to, and its name."""
    import ipaddress

    name = host.strip().strip("[]").lower().rstrip(".")
    if name in ("", "localhost") or name.endswith(".localhost"):
        return frozenset({THIS_MACHINE})
    with contextlib.suppress(ValueError):
        return frozenset({_address_endpoint(ipaddress.ip_address(name))})
    addresses = _resolve(name)
    if addresses is None:  # no answer (DNS down, a name no resolver can take): any server
        return frozenset({ANY})
    # A name that does not exist still equals itself; nothing can connect to it.
    return frozenset({name, *(_address_endpoint(ipaddress.ip_address(a)) for a in addresses)})


def _address_endpoint(address: Any) -> str:
    mapped = getattr(address, "ipv4_mapped", None)
    address = mapped or address
    if address.is_loopback or address.is_unspecified or str(address) in _own_addresses():
        return THIS_MACHINE
    return str(address)


@functools.cache
def _resolve(name: str) -> tuple[str, ...] | None:
    """A name's addresses; () when the resolver says it does not exist, None when it gives no
    answer at all (a temporary failure, a name it cannot encode): that name could be anything."""
    import socket

    try:
        infos = socket.getaddrinfo(name, None)
    except socket.gaierror as error:
        gone = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
        return () if error.errno in gone else None
    except (OSError, UnicodeError):
        return None
    return tuple(sorted({str(info[4][0]).split("%")[0] for info in infos}))


@functools.cache
def _own_addresses() -> frozenset[str]:
    """This machine's own addresses: a server reached through them is on this machine."""
    import socket

    names = {socket.gethostname()}
    with contextlib.suppress(OSError):
        names.add(socket.getfqdn())
    return frozenset(address for name in names for address in _resolve(name.lower()) or ())


# --- The policy: a run works on its own environment's database, never around another's guards --


class ForeignDatabase(Refused):
    """The run's database belongs to an environment with stricter guards than the run's own."""

    def __init__(self, message: str, owner: Environment) -> None:
        super().__init__(message)
        self.owner = owner


def guard_level(settings: Settings, name: str) -> int:
    """How strict a configured environment's guards are: 0 unshared (local), 1 shared, 2
    protected."""
    configured = settings.environment(name)
    return _level(protected=configured.protected, shared=configured.shared)


def _level(*, protected: bool, shared: bool) -> int:
    return 2 if protected else 1 if shared else 0


def check_scope(
    settings: Settings,
    environment: Environment,
    *,
    changes_database: bool,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Refuse, with one line naming both environments, a run that is not on its own database.

    Two holes closed here, before anything connects: a local URL on another machine (unless
    `environments.<name>.allow_remote`), and a database that another configured environment with
    stricter guards also points at (`DATABASE_URL_LOCAL=$DATABASE_URL_PRODUCTION`, or a
    `url_variable` redirected to production's variable). Refusing is simpler to make airtight
    than borrowing the other environment's owners, confirmation, backup and audit. A local task
    is refused even when it only reads (`local.backup` would carry a shared database off in a
    local dump); a shared one only when it changes the database, since reading is unguarded
    everywhere (`dev.upgrade --sql` renders SQL without connecting).
    """
    environ = os.environ if environ is None else environ
    _require_this_machine(settings, environment, environ)
    if environment.shared and not changes_database:
        return
    match = _stricter_match(settings, environment, environ)
    if match is None:
        return
    owner = match.environment
    kind = "protected" if owner.protected else "shared"
    if not match.readable:
        raise ForeignDatabase(
            f"{owner.url_variable} (the {owner.name} database, {kind}) cannot be read as a "
            f"database URL, so it may be the {environment.name} database "
            f"({environment.url_variable}); refused: fix or unset {owner.url_variable}",
            owner,
        )
    raise ForeignDatabase(
        f"the {environment.name} database ({environment.url_variable}) is the {owner.name} "
        f"database ({owner.url_variable}, {kind}); refused: use the {owner.name} tasks, "
        f"which apply its guards",
        owner,
    )


def stricter_owner(
    settings: Settings, environment: Environment, environ: Mapping[str, str] | None = None
) -> Environment | None:
    """The strictest other environment whose database is `environment`'s, if its guards are
    stricter than `environment`'s own. Another environment whose URL is unset is not a match;
    one whose URL the tasks cannot use is compared by what can be read of it, and one of which
    nothing can be read may be any database. Its URL is never shown."""
    environ = os.environ if environ is None else environ
    match = _stricter_match(settings, environment, environ)
    return None if match is None else match.environment


@dataclass(frozen=True)
class _OtherDatabase:
    """Another environment's database as far as its variable can be read."""

    environment: Environment
    readable: bool  # False: nothing could be read of it, so it may be every database


def _stricter_match(
    settings: Settings, environment: Environment, environ: Mapping[str, str]
) -> _OtherDatabase | None:
    """The strictest other environment with stricter guards whose database may be
    `environment`'s; `check_scope` needs to know whether it was readable to word its refusal."""
    level = _level(protected=environment.protected, shared=environment.shared)
    mine = database_identity(environment.url, environ)
    found: _OtherDatabase | None = None
    for name in sorted(settings.environments):
        other_level = guard_level(settings, name)
        if name == environment.name or other_level <= level:
            continue
        if found is not None and other_level <= guard_level(settings, found.environment.name):
            continue
        for other in _databases_of(settings, name, environ):
            if _may_be(mine, other, environ):
                found = other
                break
    return found


def _may_be(mine: DatabaseIdentity, other: _OtherDatabase, environ: Mapping[str, str]) -> bool:
    """Whether `other` may be `mine`; no name lookups for a server of another kind."""
    if not other.readable:
        return same_database(mine, unreadable_identity())
    family = _family(other.environment.url)
    if family not in (mine.family, ANY_FAMILY):
        return False
    return same_database(mine, database_identity(other.environment.url, environ))


def _databases_of(
    settings: Settings, name: str, environ: Mapping[str, str]
) -> list[_OtherDatabase]:
    """`name`'s database as configured, and the one its default variable names when the
    configuration points it elsewhere (`INVOKE_MIGRATIONS_ENVIRONMENTS_PRODUCTION_URL_VARIABLE=
    NOTHING` must not hide production). Unset: no database, no error. Set, even to something
    the tasks cannot use (a driver not installed, a bad port, a libpq keyword string), it is read
    as far as it can be; unreadable, it may be any database (fail closed)."""
    from tasks.core.settings import DEFAULTS

    configured = settings.environment(name)
    variables = [configured.url_variable]
    default = DEFAULTS["environments"].get(name, {}).get("url_variable")
    if default and default != configured.url_variable:
        variables.append(default)
    databases: list[_OtherDatabase] = []
    for index, variable in enumerate(variables):
        fallback = configured.default_url if index == 0 else None
        other = _read_other(settings, name, variable, environ, fallback)
        if other is not None:
            databases.append(other)
    return databases


def _read_other(
    settings: Settings,
    name: str,
    variable: str,
    environ: Mapping[str, str],
    default_url: str | None,
) -> _OtherDatabase | None:
    """Another environment's variable, read leniently (see `_databases_of`)."""
    from sqlalchemy.engine import URL

    configured = settings.environment(name)
    try:
        raw, source = _lookup(settings.dotenv_dir, name, variable, environ)
    except ConfigError:  # its .env file cannot be read: the value could be anything
        raw, source = None, "unreadable"
    if raw is None and source != "unreadable" and default_url:
        raw, source = default_url, "default"
    if raw is None and source != "unreadable":
        return None
    url = None if raw is None else read_url_leniently(raw, settings.root)
    readable = url is not None
    environment = Environment(
        name,
        url if url is not None else URL.create("unreadable"),
        variable,
        source,
        configured.protected,
        configured.shared,
    )
    return _OtherDatabase(environment, readable)


def read_url_leniently(raw: str, root: Path) -> URL | None:
    """What can be read of a database URL the tasks may not be able to use: a SQLAlchemy URL
    with any driver (installed or not, even a misspelt scheme), a URL SQLAlchemy rejects (a bad
    port, a libpq host list with ports), or a libpq keyword string (`host=... dbname=...`).
    None when nothing can be read. Secrets found are registered for redaction."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    text = raw.strip()
    url: URL | None
    try:
        url = make_url(text)
    except (ArgumentError, ValueError):
        url = _url_from_parts(text) if "://" in text else _url_from_libpq_keywords(text)
    if url is None:
        return None
    register_url_secrets(url)
    url = url.set(drivername=SYNC_DRIVERS.get(url.drivername, url.drivername))
    if _family(url) == "sqlite" or (_family(url) == ANY_FAMILY and not url.host):
        url = _anchor_sqlite(url, root)
    return url


def _url_from_parts(text: str) -> URL | None:
    """`scheme://user:password@host1:port1,host2/database?query`, read by hand: hosts and ports go
    to the query (`host=`), where the scope check reads libpq's and PyMySQL's lists."""
    from urllib.parse import parse_qsl, unquote, urlsplit

    from sqlalchemy.engine import URL

    try:
        parts = urlsplit(text)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
    except ValueError:
        return None
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    hosts, ports = _hosts_and_ports(unquote(hostinfo))
    for key, values in (("host", hosts), ("port", ports)):
        if values:
            given = [query[key]] if query.get(key) else []
            query[key] = ",".join([*given, *values])  # an empty host is a unix socket: kept
    if not parts.scheme:
        return None
    return URL.create(
        parts.scheme,
        username=unquote(user) or None,
        password=unquote(password) or None,
        database=unquote(parts.path.lstrip("/")) or None,
        query=query,
    )


def _hosts_and_ports(hostinfo: str) -> tuple[list[str], list[str]]:
    """`h1:5433,[::1]:5432,h3` as libpq lists them; a port that is not a number is kept as
    written, so the check reads it as any port."""
    hosts: list[str] = []
    ports: list[str] = []
    for item in hostinfo.split(",") if hostinfo else []:
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        elif item.count(":") == 1:
            host, _, port = item.partition(":")
        else:
            host, port = item, ""
        hosts.append(host.strip())
        ports.extend([port.strip()] if port.strip() else [])
    return hosts, ports


def _url_from_libpq_keywords(text: str) -> URL | None:
    """A libpq keyword string, as psycopg2 parses it; None when it is not one."""
    from sqlalchemy.engine import URL

    try:
        from psycopg2.extensions import parse_dsn

        keywords = parse_dsn(text)
    except Exception:  # not a keyword string (or no libpq here): nothing to read
        return None
    if not keywords:
        return None
    user = keywords.pop("user", None)
    password = keywords.pop("password", None)
    return URL.create("postgresql+psycopg2", username=user, password=password, query=dict(keywords))


def _require_this_machine(
    settings: Settings, environment: Environment, environ: Mapping[str, str]
) -> None:
    """Local work stays on this machine unless the configuration says otherwise."""
    if environment.shared:
        return
    if settings.environment(environment.name).allow_remote:
        return
    if is_on_this_machine(environment.url, environ):
        return
    raise Refused(
        f"the {environment.name} database ({environment.url_variable}) is on "
        f"{server_hosts(environment.url, environ)}, not this machine (loopback or a unix "
        f"socket); set migrations.environments.{environment.name}.allow_remote: true to allow it"
    )
