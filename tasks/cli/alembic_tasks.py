"""The Alembic tasks every environment collection has. Each parses flags and calls one core
function through the shared context (`tasks.cli.context.run_task`); nothing else happens here."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from invoke import Context, Task

from tasks.cli.context import run_task
from tasks.cli.flags import (
    BACKUP_HELP,
    JSON_HELP,
    LOCK_HELP,
    PLAN_FORMAT_HELP,
    REVISION_OPTION_HELP,
    SQL_HELP,
    YES_HELP,
    flag_task,
)
from tasks.core.errors import UsageError
from tasks.core.session import Session
from tasks.guard import audit as audit_trail
from tasks.migrate import commands as migrations
from tasks.migrate import writer


def alembic_tasks(collection: str, *, with_revision: bool) -> list[Task]:
    """Build the tasks bound to `collection`; closures keep the environment out of the flags."""

    def run(
        c: Context,
        name: str,
        arguments: dict[str, Any],
        operation: Callable[[Session], Any],
        **how: Any,
    ) -> None:
        run_task(c, collection, name, arguments, operation, **how)

    def run_changing(
        c: Context,
        name: str,
        arguments: dict[str, Any],
        operation: Callable[[Session], Any],
        *,
        sql: bool,
        yes: bool,
        lock_timeout: str,
        as_json: bool = False,
    ) -> None:
        """`run` for the tasks that change the database (upgrade, downgrade, stamp): --sql only
        prints, so it changes nothing; --yes answers the prompt; a --lock-timeout that is not a
        number of seconds is a one-line usage error, reported (and logged) before any database
        is touched."""
        try:
            seconds = _seconds(lock_timeout)
        except UsageError as error:
            run(c, name, arguments, _failing(error), offline=True, as_json=as_json)
            return
        # --sql renders offline: a reviewer needs no URL.
        run(
            c,
            name,
            arguments,
            operation,
            assume_yes=yes,
            lock_timeout=seconds,
            offline=sql,
            as_json=as_json,
        )

    @flag_task(
        help={
            "check": "exit 4 when the database is not at head (0 at head): anything pending? "
            "8 when an earlier run left a revision unfinished",
            "json": JSON_HELP,
        }
    )
    def current(c: Context, check: bool = False, json: bool = False) -> None:
        """Show the database's revision(s) and whether it is at head."""
        operation = lambda s: migrations.current(s, check=check)  # noqa: E731
        run(c, "current", {"check": check, "json": json}, operation, as_json=json)

    @flag_task(
        help={
            "verbose": "show full revision details",
            "graph": "draw the revision graph: branches, merges, heads, current marked",
            "format": "with --graph: text (default), mermaid (GitHub) or dot (Graphviz)",
            "json": JSON_HELP,
        }
    )
    def history(
        c: Context, verbose: bool = False, graph: bool = False, format: str = "", json: bool = False
    ) -> None:
        """List revisions, newest first, with the database's current one marked."""
        from tasks.migrate.graph import show_graph, show_graph_as

        operation: Callable[[Session], object] = (
            show_graph if graph else lambda s: migrations.history(s, verbose=verbose)
        )
        if format:  # a review format is always the graph
            operation = lambda s: show_graph_as(s, format.strip().lower())  # noqa: E731
        arguments = {"verbose": verbose, "graph": graph, "format": format, "json": json}
        run(c, "history", arguments, operation, as_json=json)

    @flag_task(help={"json": JSON_HELP})
    def heads(c: Context, json: bool = False) -> None:
        """Show the head revision(s) of the migration scripts (needs no database)."""
        run(c, "heads", {"json": json}, migrations.heads, as_json=json)

    @flag_task(
        help={"rev": "target revision (default: head)", "json": JSON_HELP, **PLAN_FORMAT_HELP}
    )
    def plan(c: Context, rev: str = "head", json: bool = False, format: str = "") -> None:
        """Read-only: pending revisions with the SQL each would run and its lint findings."""
        try:
            as_json, as_markdown = _plan_format(format, json)
        except UsageError as error:
            arguments = {"rev": rev, "json": json, "format": format}
            run(c, "plan", arguments, _failing(error))
            return
        operation = lambda s: migrations.plan(  # noqa: E731
            s, rev, as_json=as_json, as_markdown=as_markdown
        )
        arguments = {"rev": rev, "json": json, "format": format}
        run(c, "plan", arguments, operation)

    @flag_task(
        help={
            "rev": "target revision (default: head)",
            "sql": SQL_HELP,
            "yes": YES_HELP,
            "backup": BACKUP_HELP,
            "allow_destructive": "apply revisions that drop, retype, rename, tighten or lock",
            "lock_timeout": LOCK_HELP,
            "contract": "also run contract revisions (expand/contract), which upgrade stops before",
            "json": JSON_HELP,
        },
    )
    def upgrade(
        c: Context,
        rev: str = "head",
        sql: bool = False,
        yes: bool = False,
        backup: bool = True,
        allow_destructive: bool = False,
        lock_timeout: str = "",
        contract: bool = False,
        json: bool = False,
    ) -> None:
        """Apply pending revisions up to --rev (protected environments: plan, backup, confirm)."""
        arguments = {
            "rev": rev,
            "sql": sql,
            "yes": yes,
            "backup": backup,
            "allow_destructive": allow_destructive,
            "contract": contract,
        }
        operation = lambda s: migrations.upgrade(  # noqa: E731
            s,
            rev,
            sql=sql,
            backup=backup,
            allow_destructive=allow_destructive,
            contract=contract,
        )
        run_changing(
            c,
            "upgrade",
            arguments,
            operation,
            sql=sql,
            yes=yes,
            lock_timeout=lock_timeout,
            as_json=json,
        )

    @flag_task(
        help={
            "rev": "required: -1 (one step), base (everything) or a revision id",
            "sql": SQL_HELP + "; needs a FROM:TO range",
            "yes": YES_HELP,
            "backup": BACKUP_HELP + " (not allowed on protected ones)",
            "lock_timeout": LOCK_HELP,
            "json": JSON_HELP,
        },
    )
    def downgrade(
        c: Context,
        rev: str = "",
        sql: bool = False,
        yes: bool = False,
        backup: bool = True,
        lock_timeout: str = "",
        json: bool = False,
    ) -> None:
        """Revert revisions down to --rev, after confirmation (downgrades can lose data)."""
        arguments = {"rev": rev, "sql": sql, "yes": yes, "backup": backup}
        operation = lambda s: migrations.downgrade(  # noqa: E731
            s, _required_rev(rev, "downgrade"), sql=sql, backup=backup
        )
        run_changing(
            c,
            "downgrade",
            arguments,
            operation,
            sql=sql,
            yes=yes,
            lock_timeout=lock_timeout,
            as_json=json,
        )

    @flag_task(
        help={
            "rev": "required: revision to record (an id, head or base)",
            "sql": SQL_HELP,
            "yes": YES_HELP,
            "lock_timeout": LOCK_HELP,
            "json": JSON_HELP,
        },
    )
    def stamp(
        c: Context,
        rev: str = "",
        sql: bool = False,
        yes: bool = False,
        lock_timeout: str = "",
        json: bool = False,
    ) -> None:
        """Record --rev as the database's revision without running anything, after confirmation."""
        operation = lambda s: migrations.stamp(s, _required_rev(rev, "stamp"), sql=sql)  # noqa: E731
        arguments = {"rev": rev, "sql": sql, "yes": yes}
        run_changing(
            c,
            "stamp",
            arguments,
            operation,
            sql=sql,
            yes=yes,
            lock_timeout=lock_timeout,
            as_json=json,
        )

    @flag_task(help={"json": JSON_HELP})
    def check(c: Context, json: bool = False) -> None:
        """Compare the models with the live database (read-only); exit 4 when they differ."""
        run(c, "check", {"json": json}, migrations.check, as_json=json)

    @flag_task(
        help={
            "rev": "target revision (default: head)",
            "allow_destructive": "do not fail on destructive or blocking pending statements",
            "json": JSON_HELP,
        }
    )
    def preflight(
        c: Context, rev: str = "head", allow_destructive: bool = False, json: bool = False
    ) -> None:
        """Deploy gate: one head, known revision, pending lint, models match history."""
        operation = lambda s: migrations.preflight(s, rev, allow_destructive=allow_destructive)  # noqa: E731
        arguments = {"rev": rev, "allow_destructive": allow_destructive, "json": json}
        run(c, "preflight", arguments, operation, as_json=json)

    @flag_task(
        help={
            "limit": "how many runs to show (default 20)",
            "json": JSON_HELP,
            "backlog": "write the audit rows the run log kept when the database could not take "
            "them (exit 9); each once",
        }
    )
    def audit(c: Context, limit: str = "20", json: bool = False, backlog: bool = False) -> None:
        """Show the runs recorded in the database's audit table, newest first."""
        arguments = {"limit": limit, "json": json, "backlog": backlog}
        if backlog:
            run(c, "audit", arguments, audit_trail.replay_pending)
            return
        try:
            count = _whole_number(limit, "--limit")
        except UsageError as error:
            run(c, "audit", arguments, _failing(error))
            return
        operation = lambda s: audit_trail.show_runs(s, limit=count, as_json=json)  # noqa: E731
        run(c, "audit", arguments, operation)

    @flag_task(
        help={
            "message": "required: what the revision changes",
            "autogenerate": "write the operations from the differences between the models and "
            "the history (built in a throwaway database; no live database needed)",
            "against_database": "with --autogenerate: compare with the environment's database "
            "(which must be at head) instead of the history",
            **REVISION_OPTION_HELP,
        },
        auto_shortflags=False,
    )
    def revision(
        c: Context,
        message: str = "",
        autogenerate: bool = False,
        head: str = "head",
        splice: bool = False,
        branch_label: str = "",
        depends_on: str = "",
        rev_id: str = "",
        empty: bool = False,
        against_database: bool = False,
    ) -> None:
        """Write a new revision file (autogenerate: from the models against the history)."""
        options = writer.RevisionOptions(head, splice, branch_label, depends_on, rev_id, empty)
        operation = lambda s: writer.revision(  # noqa: E731
            s, message, autogenerate=autogenerate, options=options, from_database=against_database
        )
        arguments = {
            "message": message,
            "autogenerate": autogenerate,
            "against_database": against_database,
            **vars(options),
        }
        # Only --against-database reads the environment's database; the history is built apart.
        run(c, "revision", arguments, operation, offline=not against_database)

    from tasks.cli.history_tasks import checksum_tasks, repair_tasks

    built = [current, history, heads, plan, upgrade, downgrade, stamp, check, preflight, audit]
    built += reading_tasks(run) + repair_tasks(run_changing)
    if not with_revision:
        return built
    return [*built, revision, *revision_file_tasks(run), *checksum_tasks(run)]


# --- Alembic's verbs (show, branches, merge, edit); reading needs no database -------------------

Runner = Callable[..., None]


def reading_tasks(run: Runner) -> list[Task]:
    """`show` and `branches`: the scripts are enough; a URL, when set, marks the current one."""

    @flag_task(
        help={
            "rev": "required: the revision (an id, a unique prefix, head, or relative like head-1)",
            "dialect": "render the SQL for this dialect (postgresql, mysql, mariadb, sqlite); "
            "default: the environment's database, or postgresql without a URL",
            "json": JSON_HELP,
        }
    )
    def show(c: Context, rev: str = "", dialect: str = "", json: bool = False) -> None:
        """A revision's header, docstring and upgrade SQL (needs no database)."""
        from tasks.migrate.verbs import show as show_revision

        operation = lambda s: show_revision(s, rev, dialect=dialect)  # noqa: E731
        arguments = {"rev": rev, "dialect": dialect, "json": json}
        run(c, "show", arguments, operation, as_json=json)

    @flag_task(help={"json": JSON_HELP})
    def branches(c: Context, json: bool = False) -> None:
        """Branch points of the revision graph and the heads of their branches (no database)."""
        from tasks.migrate.verbs import branches as show_branches

        run(c, "branches", {"json": json}, show_branches, as_json=json)

    return [show, branches]


def revision_file_tasks(run: Runner) -> list[Task]:
    """`merge` and `edit` write or open revision files: only where `revision` exists."""

    @flag_task(
        help={
            "message": "required: what the merge joins",
            "rev_id": "the new revision's id (default: generated)",
        }
    )
    def merge(c: Context, message: str = "", rev_id: str = "") -> None:
        """Write a merge revision joining the current heads (needs no database)."""
        from tasks.migrate.verbs import merge as merge_heads

        operation = lambda s: merge_heads(s, message, rev_id=rev_id)  # noqa: E731
        arguments = {"message": message, "rev_id": rev_id}
        run(c, "merge", arguments, operation)

    @flag_task(help={"rev": "required: the revision whose file to open"})
    def edit(c: Context, rev: str = "") -> None:
        """Open a revision's file in $EDITOR (or $VISUAL)."""
        from tasks.migrate.verbs import edit as edit_revision

        operation = lambda s: edit_revision(s, rev)  # noqa: E731
        run(c, "edit", {"rev": rev}, operation)

    return [merge, edit]


def _plan_format(format: str, json: bool) -> tuple[bool, bool]:
    """(as_json, as_markdown) from --format and the older --json."""
    chosen = format.strip().lower() or ("json" if json else "text")
    if chosen not in {"text", "json", "markdown"} or (json and chosen != "json"):
        raise UsageError(f"--format takes text, json or markdown, not {format!r}")
    return chosen == "json", chosen == "markdown"


def _required_rev(rev: str, task_name: str) -> str:
    if not rev.strip():
        raise UsageError(f"{task_name} needs --rev: -1 (one step), base or a revision id")
    return rev.strip()


# Numeric flags are declared as strings: Invoke casts an int flag's value inside its parser, and
# `--lock-timeout 0.5` or `--limit ten` was a ValueError traceback before any task code ran.


def _seconds(lock_timeout: str) -> float | None:
    """Seconds to wait for the lock; "" (the flag's default) means the configured timeout."""
    text = lock_timeout.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise UsageError(f"--lock-timeout takes zero or more seconds, not {lock_timeout!r}")
    return seconds


def _whole_number(value: str, flag: str, *, most: int = 1_000_000) -> int:
    """A count from 1 to `most`: a value the database cannot take is bad input, not its error."""
    try:
        number = int(value.strip())
    except ValueError:
        raise UsageError(f"{flag} takes a whole number, not {value[:40]!r}") from None
    if not 1 <= number <= most:
        raise UsageError(f"{flag} takes a whole number from 1 to {most:,}, not {number:.3g}")
    return number


def _failing(error: UsageError) -> Callable[[Session], Any]:
    """An operation that only reports a bad flag, so it is logged like any other failure."""

    def operation(_session: Session) -> Any:
        raise error

    return operation
