"""The schema a migration history builds, in a throwaway database (Atlas's "dev database").

`revision --autogenerate` compares the models with this instead of a live database: it needs
no reachable development database at head, and whatever has drifted in one (a column added by
hand, a table `local.sync` created) never leaks into a revision. `local.sync` uses it to decide
whether the schema it built is the history's head, so it can record that revision.

The database has the environment's dialect where ci.check can build one (SQLite, or
PostgreSQL on `migrations.ci.postgres_url`); without a URL, the shared environments' dialect
(`ci.dialects`' rule), else SQLite. An inherited history that cannot run from empty starts
from `ci.since_schema`, stamped at `ci.since`, as in ci.check.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from tasks.ci.checks import (
    ci_options,
    dialects_to_check,
    load_schema,
    runner,
    session_for,
    throwaway_database,
)
from tasks.core.engines import describe_database_error
from tasks.core.environments import url_is_set
from tasks.core.errors import DatabaseError, UsageError
from tasks.core.session import Session

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


@contextmanager
def history_database(
    session: Session, target: str = "heads"
) -> Iterator[tuple[Session, Connection]]:
    """A throwaway database upgraded to `target`, and a session whose environment it is."""
    from alembic import command

    options = ci_options(session)
    dialect = history_dialect(session, options)
    with throwaway_database(session, dialect, options) as (environment, connection):
        run = runner(session, environment, connection)
        try:
            if options["since"] and options["since_schema"] is not None:
                load_schema(session, environment, connection, options["since_schema"])
                run(command.stamp, options["since"])
            if target != "base":
                run(command.upgrade, target)
        except Exception as error:
            raise DatabaseError(
                f"the migration history does not build on a throwaway {dialect} database: "
                f"{describe_database_error(error)}"
            ) from None
        yield session_for(session, environment), connection


def history_dialect(session: Session, options: dict[str, Any] | None = None) -> str:
    """SQLite or PostgreSQL: the environment's own where its URL is set, else the rule of
    `ci.dialects` (the shared environments' dialect, SQLite when none is set)."""
    options = options if options is not None else ci_options(session)
    if url_is_set(session.settings, session.record.environment):
        dialect = session.environment.dialect
        if dialect == "postgresql" and options["postgres_url"]:
            return "postgresql"
        if dialect == "sqlite":
            return "sqlite"
        raise UsageError(
            f"the history can be built only on SQLite or on PostgreSQL "
            f"(migrations.ci.postgres_url), not for {dialect}; --against-database compares "
            "with the live database instead"
        )
    dialects, _notes = dialects_to_check(session, options)
    return dialects[0] if dialects else "sqlite"
