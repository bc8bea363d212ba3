"""The scope policy: a run works on its own environment's database, never around another's
guards, and local work stays on this machine.

`check_scope` runs before anything connects (`tasks.guard.runner`): a database another
configured environment with stricter guards also points at is refused with one line naming
both, and so is a local URL on another host unless the configuration allows it. Which database
a URL reaches is `tasks.core.url_identity`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.core.environments import SYNC_DRIVERS, Environment, anchor_sqlite, lookup_variable
from tasks.core.errors import ConfigError, Refused
from tasks.core.redaction import register_url_secrets
from tasks.core.settings import Settings
from tasks.core.url_identity import (
    ANY_FAMILY,
    DatabaseIdentity,
    database_identity,
    is_on_this_machine,
    same_database,
    server_hosts,
    unreadable_identity,
    url_family,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import URL


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
    family = url_family(other.environment.url)
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
        raw, source = lookup_variable(settings.dotenv_dir, name, variable, environ)
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
    if url_family(url) == "sqlite" or (url_family(url) == ANY_FAMILY and not url.host):
        url = anchor_sqlite(url, root)
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
