"""What `local.sync` does about the revision history (issue 18.2, the newcomer trap).

Sync builds tables from the models and keeps no revision history, so a fresh database it
built had no revision: `local.current` said "behind head", `local.upgrade` failed on
"table users already exists" and autogenerate refused. Once sync has made the database match
the models, this hook compares the models with the schema the history builds (a throwaway
database, `tasks.ci.history_database`):

- no revision recorded and the models are the history's head: stamp head (the database IS
  the head's schema), so current, upgrade and revision agree;
- no revision recorded and the models are ahead of the history: say the one next step (write
  the revision; the next sync records it);
- a revision recorded: report where it stands, change nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tasks.core.console import plural
from tasks.core.errors import MigrationsError
from tasks.core.session import Session
from tasks.migrate.commands import database_heads, revision_ids, script_directory

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


def record_history(session: Session, connection: Connection) -> dict[str, Any] | None:
    """The sync report's `revision_history`: what was recorded, or the one next step."""
    script = script_directory(session)
    heads = tuple(script.get_heads())
    if not heads:
        return None  # no history at all: sync is the whole workflow
    current = database_heads(connection, session)
    if current:
        at_head = set(current) == set(heads)
        return {
            "state": "at head" if at_head else "behind",
            "revision": list(current),
            "head": list(heads),
            "message": None
            if at_head
            else f"records revision {revision_ids(current)}, behind the history's head "
            f"{revision_ids(heads)}: `invoke local.upgrade`",
        }
    try:
        differences = models_against_history(session)
    except MigrationsError as error:  # the history cannot be built here: sync still succeeded
        return {
            "state": "no revision recorded",
            "revision": [],
            "head": list(heads),
            "message": f"no revision recorded, and the history cannot be compared ({error}); "
            "if the schema is the history's head: `invoke local.stamp --rev head`",
        }
    if differences:
        return {
            "state": "models ahead of the history",
            "revision": [],
            "head": list(heads),
            "differences": differences,
            "message": "no revision recorded: the models are "
            f"{plural(len(differences), 'difference')} ahead of the history's head "
            f"{revision_ids(heads)}; next: `invoke local.revision -m MESSAGE --autogenerate` "
            "(the next `invoke local.sync` then records it)",
        }
    stamp_heads(session, connection, script)
    return {
        "state": "stamped",
        "revision": list(heads),
        "head": list(heads),
        "message": f"recorded revision {revision_ids(heads)} (the history's head: its schema "
        "is what sync built)",
    }


def models_against_history(session: Session) -> list[str]:
    """The differences between the models and the schema the whole history builds."""
    from tasks.ci.history_database import history_database
    from tasks.core import env_comparison
    from tasks.schema import drift

    rules = env_comparison.for_session(session)
    with history_database(session, "heads") as (_built, connection):
        differences = drift.compare(connection, session.metadata(), rules)
        connection.rollback()
    return [drift.describe(difference) for difference in differences]


def stamp_heads(session: Session, connection: Connection, script: Any) -> None:
    """Record the scripts' heads in the version table, as `alembic stamp heads` would."""
    from alembic.migration import MigrationContext

    schema = session.environment.schema
    options = {"version_table_schema": schema} if schema else {}
    context = MigrationContext.configure(connection, opts=options)
    context.stamp(script, "heads")
    connection.commit()
    session.record.revision_after = list(script.get_heads())
