"""Alembic operations for one environment, each a short function over a Session.

Modelled on `alembic.command`: every function resolves what it will do before doing it, shows
it, asks when the operation is dangerous, then lets Alembic act on the task's own connection.
The pieces live beside it: `scripts` (the revision scripts, the planner, argument checks),
`alembic_run` (running one Alembic command), `apply` (steps on the connection, and the guards
before them) and `writer` (new revisions).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core import suggestions
from tasks.core.console import plural
from tasks.core.errors import (
    CheckFailed,
    DatabaseError,
    DifferencesFound,
    ExitCode,
    Refused,
    UsageError,
)
from tasks.core.session import Session
from tasks.guard import statement_guard
from tasks.guard.revision_progress import report_unfinished, require_finished
from tasks.history import checksums
from tasks.migrate.alembic_run import (
    as_database_error,
    database_heads,
    server_version,
)
from tasks.migrate.apply import (
    alembic_runner,
    apply_steps,
    backup_before,
    nothing_to,
    require_consent,
    run_offline,
    show_steps,
    shown_plan,
    step_name,
    with_stamp_hint,
)
from tasks.migrate.scripts import (
    display_path,
    downgrade_steps,
    is_known,
    merge_command,
    require_known,
    revision_doc,
    revision_ids,
    script_directory,
    steps_towards,
    unknown_heads,
    upgrade_steps,
    validate_revision,
)
from tasks.migrate.verbs import current_if_configured
from tasks.plan.steps import Plan, build_plan, print_plan
from tasks.schema import drift

# --- read-only ------------------------------------------------------------------------------

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


def current(session: Session, *, check: bool = False) -> list[str]:
    """Print the database's revision(s) and whether they are the scripts' head(s); `check`
    makes "not at head" exit 4, so a script can ask "anything pending?" cheaply."""
    script = script_directory(session)
    with session.connect() as connection:
        heads = database_heads(connection, session)
        unrecorded = [] if heads else _tables_without_history(connection)
        report_unfinished(session, connection, script, heads, check=check)
    script_heads = set(script.get_heads())
    name = session.environment.name
    if not script_heads:
        where = display_path(session, Path(script.versions))
        session.console.line(f"{name}: the scripts have no revisions yet ({where} is empty)")
    if not heads and script_heads:
        session.console.line(
            f"{name}: no revision applied (base); head is {revision_ids(script_heads)}"
        )
    for revision in heads:
        marker = " (head)" if revision in script_heads else ""
        doc = revision_doc(script, revision)
        session.console.line(f"{name}: {revision}{marker} {doc}".rstrip())
    if unknown_heads(script, heads):
        session.console.line(f"{name}: at a revision the scripts do not know")
        session.record.details["unknown"] = unknown_heads(script, heads)
        if check:
            raise DifferencesFound(f"{name}: at a revision the scripts do not know")
        return list(heads)
    pending = upgrade_steps(script, "heads", heads) if script_heads else []
    session.record.details.update(
        {
            "current": list(heads),
            "heads": sorted(script_heads),
            "at_head": not pending,
            "pending": [step_name(step).split()[0] for step in pending],
        }
    )
    if pending and unrecorded:
        session.console.line(f"{name}: {_unrecorded_advice(session, len(unrecorded))}")
    elif pending:
        session.console.line(f"{name}: behind head by {plural(len(pending), 'revision')}")
    else:
        session.console.line(f"{name}: at head")
    if check and pending:
        raise DifferencesFound(f"{name}: not at head, {plural(len(pending), 'revision')} pending")
    return list(heads)


def _tables_without_history(connection: Connection) -> list[str]:
    """Tables in a database that records no revision (built by sync, create_all or a dump)."""
    from sqlalchemy import inspect

    from tasks.core.comparison import TOOL_TABLES

    names = set(inspect(connection).get_table_names()) - TOOL_TABLES
    connection.rollback()
    return sorted(names)


def _unrecorded_advice(session: Session, tables: int) -> str:
    """One next step for tables without a recorded revision: upgrading would collide with them."""
    collection = suggestions.collection_of(session.record.task)
    stamp = suggestions.command(collection, "stamp", "--rev head")
    if collection == "local":
        step = "`invoke local.sync` records the history's head when the models match it"
    elif stamp:
        step = f"if its schema is the history's head, `{stamp}`"
    else:
        step = "if its schema is the history's head, stamp it at head"
    return (
        f"{plural(tables, 'table')} but no revision recorded (built by local.sync, create_all "
        f"or a dump), so an upgrade from base would collide with them; {step}"
    )


def history(session: Session, *, verbose: bool = False) -> None:
    """Alembic's history, newest first, with the database's revision marked (current)."""

    # Reading needs no database (issue 12.2); with none, or one at base, nothing is marked.
    # Alembic's --indicate-current runs env.py (models and all) only to read the version table,
    # which current_if_configured has read: the lines are Alembic's, without that second run.
    from tasks.core.alembic_internals import history_line
    from tasks.core.console import one_value

    current = current_if_configured(session) or ()
    script = script_directory(session)
    for revision in script.walk_revisions(base="base", head="heads"):
        text = history_line(revision, current=revision.revision in current, verbose=verbose)
        if not verbose:  # one line per revision: a line break in a message forges no row
            text = one_value(text)
        for line in text.split("\n"):
            session.console.line(line)


def heads(session: Session) -> list[str]:
    """The scripts' head revision(s); more than one means a merge is needed."""
    from tasks.migrate.verbs import current_if_configured

    script = script_directory(session)
    revisions = list(script.get_heads())
    current = current_if_configured(session) or ()
    for revision in revisions:
        tags = "head, current" if revision in current else "head"
        session.console.line(f"{revision} ({tags}) {revision_doc(script, revision)}".rstrip())
    behind = [revision for revision in current if revision not in revisions]
    if behind:
        name = session.environment.name
        session.console.line(f"{name} database: {revision_ids(behind)} (current, not a head)")
    if len(revisions) > 1:
        session.console.warning(
            f"{len(revisions)} heads: merge them ({merge_command(session)}) before upgrading "
            "to 'head'"
        )
    return revisions


def check(session: Session) -> None:
    """Compare the models with the live database, read-only; differences are an error.

    On the quick comparison `local.sync --check` uses (bulk reflection, Alembic's rules, held
    side by side with Alembic's `compare_metadata` in tests; hooks it does not model hand over
    to Alembic): 14 s at 2,000 tables became the seconds sync takes (issue 18.9)."""
    from tasks.core import env_comparison
    from tasks.schema import fast_diff

    with session.connect() as connection:
        database_heads(connection, session)
        rules = env_comparison.for_session(session, connection)
        try:
            changes = fast_diff.compare(connection, session.metadata(), comparison=rules)
        except Exception as error:
            raise as_database_error(session, error) from None
        connection.rollback()
    name = session.environment.name
    differences = [drift.describe_change(change) for change in changes]
    if not differences:
        session.console.line(f"{name}: models and database match")
        return
    for difference in differences:
        session.console.line(f"  {difference}")
    session.record.details["differences"] = differences
    raise DifferencesFound(
        f"{name}: {plural(len(differences), 'difference')} between models and database"
    )


def preflight(session: Session, revision: str = "head", *, allow_destructive: bool = False) -> None:
    """Gate for deploy pipelines: every check runs and prints; the first failure sets the code."""
    script = script_directory(session)
    failures: list[tuple[ExitCode, str]] = []

    def report(ok: bool, code: ExitCode, text: str) -> None:
        session.console.line(f"  {'ok    ' if ok else 'FAILED'} {text}")
        if not ok:
            failures.append((code, text))

    script_heads = tuple(script.get_heads())
    single = len(script_heads) == 1 or revision not in {"head"}
    report(single, ExitCode.PREFLIGHT_HEADS, f"heads: {revision_ids(script_heads) or 'none'}")
    with session.connect() as connection:
        current_heads = database_heads(connection, session)
        version = server_version(session, connection)
        unknown = [head for head in current_heads if not is_known(script, head)]
        edited: list[checksums.Edit] = []
        if not unknown:
            fine, line, edited = checksums.preflight_check(connection, script, current_heads)
    report(
        not unknown,
        ExitCode.PREFLIGHT_UNKNOWN_REVISION,
        f"database revision {revision_ids(current_heads) or 'base'}"
        + (
            f": unknown to the scripts: {revision_ids(unknown)}"
            if unknown
            else " is known to the scripts"
        ),
    )
    if single and not unknown:
        steps = upgrade_steps(script, revision, current_heads)
        planned = build_plan(
            session,
            script,
            steps,
            direction="upgrade",
            current=current_heads,
            target=revision,
            server_version=version,
        )
        pending = planned.needing_consent()
        blocking = sum(finding.severity == "blocking" for _, finding in pending)
        report(
            allow_destructive or not pending,
            ExitCode.PREFLIGHT_DESTRUCTIVE,
            f"{plural(len(steps), 'pending revision')}, {len(pending) - blocking} destructive "
            f"and {plural(blocking, 'blocking statement')}"
            + ("" if not pending else " (--allow-destructive to accept)"),
        )
        for item in planned.revisions:
            rules = ", ".join(sorted({finding.rule for finding in item.findings})) or "clean"
            session.console.line(f"           {item.revision} {item.message}: {rules}")
        session.record.details["pending"] = [item.revision for item in planned.revisions]
    if not unknown:  # an edit: its diff printed, and the refusal's line is the check's line
        line = str(checksums.refusal(session, edited)) if edited else line
        report(fine, ExitCode.EDITED_REVISION, line)
    differences = history_differences(session)
    report(
        not differences,
        ExitCode.PREFLIGHT_MODELS,
        "models match the migration history"
        if not differences
        else f"models differ from the migration history: {'; '.join(differences)}",
    )
    if failures:
        code, text = failures[0]
        raise CheckFailed(f"preflight failed: {text}", code)


def history_differences(session: Session) -> list[str]:
    """Build the whole history in a throwaway database and compare it with the models.

    For a PostgreSQL environment the throwaway database is made on ci.check's scratch server
    (`migrations.ci.postgres_url`), so a history only PostgreSQL can build (SET LOCAL,
    extensions, partial indexes) is judged where it will run. Otherwise, or when that server
    cannot be used, a SQLite file: independent of any server and of the environment's
    credentials, and a history SQLite cannot build reports the error instead of a false pass.
    """
    from tasks.ci.checks import ci_options, models_match, throwaway_database

    options = ci_options(session)  # the scratch server and the throwaway databases' prefix
    backends = ["sqlite"]
    if session.environment.dialect == "postgresql" and options["postgres_url"]:
        backends.insert(0, "postgresql")
    for backend in backends:
        try:
            with throwaway_database(session, backend, options) as (
                environment,
                connection,
            ):
                outcome = models_match(session, environment, connection)
        except DatabaseError as error:  # the scratch server is unusable: fall back to SQLite
            session.console.line(f"  (history check on SQLite: {error})")
            continue
        return [] if outcome.ok else [outcome.detail]
    return ["no throwaway database to build the history in"]


# --- changes --------------------------------------------------------------------------------


def plan(
    session: Session, revision: str = "head", *, as_json: bool = False, as_markdown: bool = False
) -> Plan:
    """Read-only: the revisions between the database and `revision`, their SQL and lint.

    A target below the database's revision (-1, base, an ancestor) plans the downgrade, linted
    the same way, so the revert can be reviewed before anyone runs it.
    """
    script = script_directory(session)
    with session.connect() as connection:
        before = database_heads(connection, session)
        version = server_version(session, connection)
    require_known(session, script, before)
    direction, steps = steps_towards(script, revision, before)
    planned = build_plan(
        session,
        script,
        steps,
        direction=direction,
        current=before,
        target=revision,
        server_version=version,
    )
    if as_json:
        session.console.line(json.dumps(planned.as_dict(), indent=2))
    elif as_markdown:  # for a pull-request comment or $GITHUB_STEP_SUMMARY (issue 12.7)
        from tasks.plan.markdown import plan_markdown

        session.console.line(plan_markdown(planned.as_dict()).rstrip("\n"))
    else:
        print_plan(session.console, planned, show_sql=True)
    session.record.details["pending"] = [item.revision for item in planned.revisions]
    return planned


def upgrade(
    session: Session,
    revision: str = "head",
    *,
    sql: bool = False,
    backup: bool = True,
    allow_destructive: bool = False,
    contract: bool = False,
) -> None:
    """Apply pending revisions up to `revision`.

    Without `contract`, stops before the first contract revision of an expand/contract change
    (`contract = True` in its file, tasks/online/expand_contract.py) and says so.

    On a protected environment: the plan with SQL and lint, destructive statements only with
    `allow_destructive` (or typed consent), a typed confirmation, then the backup (unless
    `backup` is False; after the answer, so a "no" leaves no dump behind), then a check that
    the database reached the target. The migration lock is held from before the plan.
    """
    from alembic import command

    if sql:
        run_offline(session, command.upgrade, revision)
        return
    script = script_directory(session)
    protected = session.environment.protected
    asks = protected and not (session.confirmer.assume_yes and allow_destructive)
    if not asks:  # nobody to wait for: lock first, so a second runner finds nothing to do
        session.hold_lock()
    with session.connect() as connection:
        before = database_heads(connection, session)
        require_known(session, script, before)
        require_finished(session, connection, script, before)
        steps = upgrade_steps(script, revision, before)
        checksums.verify_applied(session, connection, script, before)
        name = session.environment.name
        if not contract:
            steps, revision = _before_contract(session, steps, revision)
        if not steps:
            checksums.prepare_records(session, connection, script, before)
            nothing_to(session, "upgrade", before)
            return
        guard = None
        if protected:
            planned = shown_plan(session, connection, script, steps, "upgrade", before, revision)
            action = f"Upgrade {name} ({session.environment.masked_url}) to {revision}"
            # plan -> the environment's name -> destructive consent -> lock -> the plan again
            # -> backup -> apply: a declined run writes nothing, and nobody holds the lock
            # while a person reads.
            session.confirm(action)
            consented = require_consent(session, planned, allow_destructive)
            guard = statement_guard.for_plan(session, planned, consented=consented)
            remaining = lambda now: bool(upgrade_steps(script, revision, now))  # noqa: E731
            if not _still_planned(session, connection, before, "upgrade", remaining):
                return
            backup_before(session, requested=backup, mandatory=False)
        else:
            show_steps(session, f"{name}: {plural(len(steps), 'revision')} to apply", steps)
        checksums.prepare_records(session, connection, script, before)
        try:
            run = alembic_runner(script, "upgrade", guard)
            apply_steps(session, connection, steps, run, revision, guard=guard)
        except statement_guard.StatementRefused as refused:
            session.record.details["statement_refused"] = {
                "revision": refused.revision,
                "statement": refused.statement,
                "rules": refused.rules,
            }
            raise
        except DatabaseError as error:
            raise with_stamp_hint(session, error, before) from None


def _before_contract(session: Session, steps: list[Any], revision: str) -> tuple[list[Any], str]:
    """The steps up to the first contract revision (exclusive), and the revision they end at.

    A contract revision drops what the application deployed before the expand still uses; it
    runs only when asked (`--contract`), after the code using only the new columns is out.
    """
    from tasks.online.expand_contract import is_contract

    for index, step in enumerate(steps):
        script = step.revision
        if step.is_upgrade and is_contract(script.module):
            from tasks.core import suggestions

            collection = suggestions.collection_of(session.record.task)
            # Environment collections have `upgrade --contract`; fleet.upgrade has no such flag.
            upgrade = (
                suggestions.command(collection, "upgrade", "--contract")
                if collection != "fleet"
                else None
            )
            how = f"`{upgrade}`" if upgrade else "the environment's `upgrade --contract`"
            session.console.line(
                f"{session.environment.name}: stopping before {script.revision} "
                f"({script.doc or 'contract'}), a contract revision: once no running code uses "
                f"the old columns, run {how}"
            )
            session.record.details["stopped_before_contract"] = script.revision
            kept = steps[:index]
            return kept, (kept[-1].revision.revision if kept else revision)
    return steps, revision


def _still_planned(
    session: Session,
    connection: Connection,
    before: tuple[str, ...],
    direction: str,
    remaining: Callable[[tuple[str, ...]], bool] | None = None,
) -> bool:
    """Take the lock after the answers and read the database again: the answers were given to
    a plan from `before`. Moved on meanwhile (another runner): refuse, or, when that runner did
    all of it (`remaining` says no work is left), nothing to do (False)."""
    session.hold_lock()
    now = database_heads(connection, session)
    if set(now) == set(before):
        return True
    if remaining is not None and not remaining(now):
        nothing_to(session, direction, now)
        return False
    raise Refused(
        f"{session.environment.name} database moved from {revision_ids(before) or 'base'} to "
        f"{revision_ids(now) or 'base'} while the {direction} was being confirmed (another "
        "runner?); nothing changed: run it again to see the new plan"
    )


def downgrade(
    session: Session,
    revision: str,
    *,
    sql: bool = False,
    backup: bool = True,
) -> None:
    """Revert revisions down to `revision` (-1, base or an id), always after confirmation.

    On shared environments the plan shows each statement that loses data and a backup is taken
    first (mandatory on protected ones).
    """
    from alembic import command

    if sql:
        run_offline(session, command.downgrade, revision)
        return
    script = script_directory(session)
    if session.confirmer.assume_yes:  # nobody to wait for: lock first
        session.hold_lock()
    with session.connect() as connection:
        before = database_heads(connection, session)
        require_known(session, script, before)
        require_finished(session, connection, script, before)
        steps = downgrade_steps(script, revision, before)
        checksums.verify_applied(session, connection, script, before)
        name = session.environment.name
        if not steps:
            nothing_to(session, "downgrade", before)
            return
        action = f"Downgrade {name} ({session.environment.masked_url}) to {revision}"
        if not session.environment.shared:
            show_steps(session, f"{name}: {plural(len(steps), 'revision')} to revert", steps)
        else:
            shown_plan(session, connection, script, steps, "downgrade", before, revision)
            if not backup and session.environment.protected:  # refused before anyone is asked
                backup_before(session, requested=False, mandatory=True)
        # On stdout, next to the question: stderr keeps the one line that says how it ended.
        session.console.line("WARNING: a downgrade can drop tables and columns and lose their data")
        session.confirm(action)
        _still_planned(session, connection, before, "downgrade")
        if session.environment.shared:  # after the answer: a "no" writes no backup
            backup_before(session, requested=backup, mandatory=session.environment.protected)
        checksums.prepare_records(session, connection, script, before)
        apply_steps(session, connection, steps, alembic_runner(script, "downgrade"), revision)


def stamp(session: Session, revision: str, *, sql: bool = False) -> None:
    """Record `revision` as applied without running anything, after confirmation."""
    from alembic import command

    script = script_directory(session)
    validate_revision(script, revision)
    if sql:
        run_offline(session, command.stamp, revision)
        return
    if session.confirmer.assume_yes:  # nobody to wait for: lock first
        session.hold_lock()
    with session.connect() as connection:
        before = database_heads(connection, session)
        name = session.environment.name
        session.console.line(f"{name}: at {revision_ids(before) or 'base'}, stamping {revision}")
        operation: Callable[..., Any] = command.stamp
        unknown = unknown_heads(script, before)
        if unknown:
            # Alembic cannot move from a revision it does not know; purge replaces it outright.
            session.console.line(
                f"WARNING: {revision_ids(unknown)} is unknown to the scripts and will be replaced"
            )
            operation = functools.partial(command.stamp, purge=True)
        session.confirm(f"Stamp {name} ({session.environment.masked_url}) as {revision}")
        _still_planned(session, connection, before, "stamp")
        apply_steps(session, connection, [], operation, revision, stamping=True)
        after = tuple(session.record.revision_after or ())
        checksums.reconcile(session, connection, script, after)


def accept_edit(session: Session, revision: str, *, reason: str) -> None:
    """`repair -r REV --accept-edit --reason ...`: after review, the edited revision's new
    checksum is recorded (the old one, the operator and the reason go to the audit row)."""
    if not reason.strip():
        raise UsageError("--accept-edit needs --reason: why the edited revision is accepted")
    script = script_directory(session)
    validate_revision(script, revision)
    with session.connect() as connection:
        before = database_heads(connection, session)
        require_known(session, script, before)
        session.confirm(f"Accept the edited revision {revision} on {session.environment.name}")
        checksums.accept_edit(session, connection, script, before, revision, reason)
        session.record.revision_after = list(before)
