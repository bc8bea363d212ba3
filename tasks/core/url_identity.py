"""Which database a URL reaches, and so which environment's guards a run on it needs.

A collection's guards (owners, typed confirmation, backup, audit) belong to a database, not to
a variable name: `DATABASE_URL_LOCAL=$DATABASE_URL_PRODUCTION invoke local.reset` must not
empty production around them. The identity here is what a URL connects to (family, server
endpoints, ports, database; for SQLite the file itself), read the way the drivers read it
(query parameters override the URL, libpq's PG* variables fill in what it omits). Whatever it
cannot pin down (a pg_service entry, a MySQL option file) matches every database of its kind:
a guard that cannot tell must assume the worst. The policy that uses it is `tasks.core.scope`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

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
    family = url_family(url)
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
    if url_family(url) == "sqlite":
        return True
    target = _server_target(url, os.environ if environ is None else environ)
    return target.understood and all(_is_loopback_literal(host) for host in target.hosts)


def server_hosts(url: URL, environ: Mapping[str, str] | None = None) -> str:
    """The hosts a server URL reaches, for a message (never the password)."""
    target = _server_target(url, os.environ if environ is None else environ)
    if not target.understood:
        return "a server named outside the URL"
    return ", ".join(host or "a unix socket" for host in target.hosts)


def url_family(url: URL) -> str:
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
    family = url_family(url)
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

    names = {socket.gethostname()}
    with contextlib.suppress(OSError):
        names.add(socket.getfqdn())
    return frozenset(address for name in names for address in _resolve(name.lower()) or ())
