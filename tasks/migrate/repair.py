"""`invoke <env>.repair -r REV --applied | --reverted`: record what a person did about a revision
that did not finish (tasks.guard.revision_progress), so upgrades may run again.

The tasks cannot know whether the statements a failed revision left should be completed or
undone; a person decides, does it by hand, and says which. `--applied` records the revision as
applied (the version table moves to it, or past it for a downgrade); `--reverted` leaves the
version table where it is. Either way the bookkeeping row goes, and the run is audited on shared
databases like every change.
"""

from __future__ import annotations

from typing import Any

from tasks.core.errors import UsageError
from tasks.core.session import Session
from tasks.guard.revision_progress import remove_rows, unfinished_row
from tasks.migrate.alembic_run import database_heads
from tasks.migrate.scripts import revision_ids, script_directory, validate_revision


def repair(session: Session, revision: str, *, applied: bool, reverted: bool) -> None:
    """Resolve the unfinished run of `revision` as `applied` or `reverted`, after confirmation."""
    if applied == reverted:
        raise UsageError(
            "repair needs exactly one of --applied (you finished the revision by hand) or "
            "--reverted (you undid what it left)"
        )
    if not revision.strip():
        raise UsageError("repair needs --rev: the revision that did not finish")
    script = script_directory(session)
    validate_revision(script, revision)
    found = script.get_revision(revision)
    if found is None:
        raise UsageError(f"revision {revision!r}: name one revision, not {revision!r}")
    revision_id = found.revision
    schema = session.environment.schema
    name = session.environment.name
    with session.connect() as connection:
        before = database_heads(connection, session)
        row = unfinished_row(connection, schema, revision_id)
        connection.rollback()
        what = "applied (finished by hand)" if applied else "reverted (undone by hand)"
        session.console.line(
            f"{name}: revision {revision_id} did not finish ({row.direction} by {row.task}, "
            f"{row.error or row.state}); recording it as {what}"
        )
        session.confirm(
            f"Record revision {revision_id} on {name} ({session.environment.masked_url}) as {what}"
        )
        with connection.begin():
            if applied:
                _stamp(connection, script, schema, _end_state(found, row.direction))
            remove_rows(connection, schema, revision_id)
        after = database_heads(connection, session)
    session.record.revision_after = list(after)
    session.record.details["repair"] = {
        "revision": revision_id,
        "recorded": "applied" if applied else "reverted",
        "direction": row.direction,
        "statements": row.statements,
        "residue": row.residue,
    }
    session.console.line(
        f"{name}: revision {revision_id} recorded as {what}; the database is at "
        f"{revision_ids(after) or 'base'} (was {revision_ids(before) or 'base'})"
    )


def _end_state(found: Any, direction: str) -> Any:
    """Where the version table stands once the revision's step is complete."""
    if direction == "upgrade":
        return found.revision
    return found.down_revision or "base"


def _stamp(connection: Any, script: Any, schema: str | None, target: Any) -> None:
    """Move the version table as a finished step would (Alembic's own stamp logic)."""
    from alembic.runtime.migration import MigrationContext

    options = {"version_table_schema": schema} if schema else {}
    context = MigrationContext.configure(connection, opts=options)
    context.stamp(script, target)
