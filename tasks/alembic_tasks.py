"""The Alembic tasks every environment collection has. Each parses flags and calls one core
function from `tasks.migrations` through the shared context; nothing else happens here."""

from __future__ import annotations

from invoke import Context, Task, task

from tasks import migrations
from tasks.context import run_task
from tasks.errors import UsageError

YES_HELP = "answer the confirmation prompt (scripts, CI); never implied"
SQL_HELP = "print the SQL instead of running it (offline mode; opens no connection)"


def alembic_tasks(collection: str, *, with_revision: bool) -> list[Task]:
    """Build the tasks bound to `collection`; closures keep the environment out of the flags."""

    @task
    def current(c: Context) -> None:
        """Show the database's revision(s) and whether it is at head."""
        run_task(c, collection, "current", {}, migrations.current, changes_database=False)

    @task(help={"verbose": "show full revision details"})
    def history(c: Context, verbose: bool = False) -> None:
        """List revisions, newest first, with the database's current one marked."""
        run_task(
            c,
            collection,
            "history",
            {"verbose": verbose},
            lambda s: migrations.history(s, verbose=verbose),
            changes_database=False,
        )

    @task
    def heads(c: Context) -> None:
        """Show the head revision(s) of the migration scripts."""
        run_task(
            c,
            collection,
            "heads",
            {},
            migrations.heads,
            changes_database=False,
            needs_database=False,
        )

    @task(help={"rev": "target revision (default: head)", "sql": SQL_HELP, "yes": YES_HELP})
    def upgrade(c: Context, rev: str = "head", sql: bool = False, yes: bool = False) -> None:
        """Apply pending revisions up to --rev (protected environments ask first)."""
        run_task(
            c,
            collection,
            "upgrade",
            {"rev": rev, "sql": sql, "yes": yes},
            lambda s: migrations.upgrade(s, rev, sql=sql),
            changes_database=not sql,
            assume_yes=yes,
        )

    @task(
        help={
            "rev": "required: -1 (one step), base (everything) or a revision id",
            "sql": SQL_HELP + "; needs a FROM:TO range",
            "yes": YES_HELP,
        }
    )
    def downgrade(c: Context, rev: str = "", sql: bool = False, yes: bool = False) -> None:
        """Revert revisions down to --rev, after confirmation (downgrades can lose data)."""
        run_task(
            c,
            collection,
            "downgrade",
            {"rev": rev, "sql": sql, "yes": yes},
            lambda s: migrations.downgrade(s, _required_rev(rev, "downgrade"), sql=sql),
            changes_database=not sql,
            assume_yes=yes,
        )

    @task(
        help={
            "rev": "required: revision to record (an id, head or base)",
            "sql": SQL_HELP,
            "yes": YES_HELP,
        }
    )
    def stamp(c: Context, rev: str = "", sql: bool = False, yes: bool = False) -> None:
        """Record --rev as the database's revision without running anything, after confirmation."""
        run_task(
            c,
            collection,
            "stamp",
            {"rev": rev, "sql": sql, "yes": yes},
            lambda s: migrations.stamp(s, _required_rev(rev, "stamp"), sql=sql),
            changes_database=not sql,
            assume_yes=yes,
        )

    @task
    def check(c: Context) -> None:
        """Compare the models with the live database (read-only); exit 4 when they differ."""
        run_task(c, collection, "check", {}, migrations.check, changes_database=False)

    @task(
        help={
            "message": "required: what the revision changes",
            "autogenerate": "write the operations from the differences between models and database",
        }
    )
    def revision(c: Context, message: str = "", autogenerate: bool = False) -> None:
        """Write a new revision file (the database must be at head); warns when it drops things."""
        run_task(
            c,
            collection,
            "revision",
            {"message": message, "autogenerate": autogenerate},
            lambda s: migrations.revision(s, message, autogenerate=autogenerate),
            changes_database=False,
            creates_revision=True,
        )

    built = [current, history, heads, upgrade, downgrade, stamp, check]
    return [*built, revision] if with_revision else built


def _required_rev(rev: str, task_name: str) -> str:
    if not rev.strip():
        raise UsageError(f"{task_name} needs --rev: -1 (one step), base or a revision id")
    return rev.strip()
