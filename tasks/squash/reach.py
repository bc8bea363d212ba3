"""Which databases a squash would strand: those it can reach that are behind the squashed revision.

A database at a revision inside the squashed range (other than its last) would be at a revision
that no longer exists after the squash: no upgrade could move it. Every configured environment
with a URL and every fleet target is read (read-only, no lock); one that cannot be read counts as
behind (the squash fails closed), except a SQLite file that does not exist (a database nobody has
built yet is at base).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.core.errors import MigrationsError

if TYPE_CHECKING:
    from tasks.core.environments import Environment
    from tasks.core.session import Session


@dataclass(frozen=True)
class Stranded:
    name: str
    where: str  # "at <revisions>" or "unreadable: <why>"

    def line(self) -> str:
        return f"{self.name} ({self.where})"


def stranded(session: Session, squashed: set[str], revision: str) -> list[Stranded]:
    """Databases behind `revision` inside the squashed range, or that could not be read."""
    behind = set(squashed) - {revision}
    found = [*_environments(session, behind), *_fleets(session, behind)]
    return found


def _environments(session: Session, behind: set[str]) -> list[Stranded]:
    from tasks.core.environments import resolve_environment, url_is_set

    found = []
    for name in sorted(session.settings.environments):
        if not url_is_set(session.settings, name):
            continue
        try:
            environment = resolve_environment(session.settings, name)
            if _missing_sqlite(environment):
                continue
            heads = _heads(session, environment)
        except MigrationsError as error:
            found.append(Stranded(f"environment {name}", f"unreadable: {error}"))
            continue
        if set(heads) & behind:
            found.append(Stranded(f"environment {name}", f"at {', '.join(heads)}"))
    return found


def _fleets(session: Session, behind: set[str]) -> list[Stranded]:
    from tasks.fleet.commands import Selection, status

    found = []
    for fleet in sorted(session.settings.extra.get("fleets") or {}):
        try:
            report = status(session.settings, Selection(fleet=fleet))
        except MigrationsError as error:
            found.append(Stranded(f"fleet {fleet}", f"unreadable: {error}"))
            continue
        for row in report["targets"]:
            name = f"fleet {fleet} target {row['name']}"
            if row["revision"] is None:
                found.append(Stranded(name, f"unreadable: {row['error']}"))
            elif set(row["revision"]) & behind:
                found.append(Stranded(name, f"at {', '.join(row['revision'])}"))
    return found


def _missing_sqlite(environment: Environment) -> bool:
    if environment.dialect != "sqlite":
        return False
    database = environment.url.database
    if not database or database == ":memory:":
        return False
    return not Path(database).exists()


def _heads(session: Session, environment: Environment) -> tuple[str, ...]:
    from alembic.migration import MigrationContext

    from tasks.core.engines import connect, describe_database_error
    from tasks.core.errors import DatabaseError

    with connect(environment, session.settings.connect_timeout) as connection:
        try:
            options = {"version_table_schema": environment.schema} if environment.schema else {}
            heads = MigrationContext.configure(connection, opts=options).get_current_heads()
        except Exception as error:
            raise DatabaseError(describe_database_error(error)) from None
        connection.rollback()
    return tuple(heads)
