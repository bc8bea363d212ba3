"""Applying planned steps on the task's connection: upgrade, downgrade and stamp runs, the guards
between the plan and the first statement, and the proof that the database reached the target.

Around Alembic's own `upgrade`/`downgrade`/`stamp`: the plan shown to a shared database, typed
consent for destructive statements, the backup, progress per revision (and its duration in the
run log), the migration lock re-checked before each revision starts and before it commits, and
on MySQL/MariaDB what a failed revision left behind. `--sql` (offline) runs go through here too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from tasks.core import suggestions
from tasks.core.alembic_config import alembic_config
from tasks.core.alembic_internals import planned_downgrade, planned_upgrade
from tasks.core.console import Progress
from tasks.core.database_identity import identity
from tasks.core.errors import DatabaseError, LockLost, MigrationsError, Refused, UsageError
from tasks.core.session import Session
from tasks.guard import interrupts, revision_progress, statement_guard
from tasks.history import checksums
from tasks.lint import residue as ddl_residue
from tasks.migrate.alembic_run import (
    ENV_PY_HINT,
    ConsoleStream,
    database_heads,
    env_py_path,
    handover_for,
    run_alembic,
    server_version,
)
from tasks.migrate.scripts import first_line, require_short, revision_ids, script_directory
from tasks.migrate.verbs import offline_session
from tasks.plan.steps import Plan, build_plan, print_plan

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.runtime.migration import RevisionStep
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import Connection

    from tasks.guard.statement_guard import StatementGuard


def nothing_to(session: Session, direction: str, before: tuple[str, ...]) -> None:
    """Say there is nothing to do; the audit records the revision as unchanged."""
    where = revision_ids(before) or "base"
    session.console.line(f"{session.environment.name}: nothing to {direction}, already at {where}")
    session.record.revision_after = list(before)
    session.record.details["no_op"] = True


def show_steps(session: Session, title: str, steps: list[RevisionStep]) -> None:
    session.console.line(title + ":")
    for step in steps:
        session.console.line(f"  {step_name(step)}")


def shown_plan(
    session: Session,
    connection: Connection,
    script: ScriptDirectory,
    steps: list[RevisionStep],
    direction: str,
    before: tuple[str, ...],
    target: str,
) -> Plan:
    """The plan for `steps`, printed with its SQL before a shared database is asked about it."""
    planned = build_plan(
        session,
        script,
        steps,
        direction=direction,
        current=before,
        target=target,
        server_version=server_version(session, connection),
    )
    print_plan(session.console, planned, show_sql=True)
    return planned


def backup_before(session: Session, *, requested: bool, mandatory: bool) -> None:
    """A backup before a risky change; skipping it must be explicit, and is not always allowed."""
    from tasks.backup.backups import create_backup

    if not requested:
        if mandatory:
            raise Refused(
                f"a backup is mandatory before this on {session.environment.name}; drop --no-backup"
            )
        session.console.warning("--no-backup: going ahead without a backup")
        session.record.details["backup"] = None
        return
    if session.backup_taken is not None:  # one backup of a shared database for all its schemas
        session.record.details["backup"] = str(session.backup_taken)
        return
    path = create_backup(session)
    session.record.details["backup"] = str(path)


def require_consent(session: Session, planned: Plan, allow_destructive: bool) -> bool:
    """Destructive and blocking statements need --allow-destructive or typed consent; --yes
    answers the environment's confirmation, never this one. True when the operator consented
    to everything the plan shows (the statement guard then lets those rules run). Findings a
    revision's written `consent` covers need neither; the audit row records that consent."""
    from tasks.plan import consent_summary

    _record_written_consent(session, planned)
    pending = planned.needing_consent()
    if not pending:
        return False
    # Every finding in the run log; counts and the first ones in the line and the audit row.
    session.record.details["needs_consent"] = [
        consent_summary.describe(revision, finding) for revision, finding in pending
    ]
    session.record.arguments["needs_consent"] = consent_summary.for_audit(pending)
    if allow_destructive:
        _record_consent(session, "--allow-destructive")
        return True
    what = consent_summary.one_line(pending)
    if not session.can_prompt():
        raise Refused(
            f"{what}: pass --allow-destructive to apply them; nothing changed"
            + _full_list_hint(session, len(pending))
        )
    session.confirmer.ask(
        f"{what}; to apply them anyway", type_to_confirm="allow-destructive", honour_yes=False
    )
    _record_consent(session, "typed at the prompt")
    return True


def _record_written_consent(session: Session, planned: Plan) -> None:
    """Each rule consented to in a revision file, its reason and the file's hash, in the audit
    row's arguments: which reviewed text allowed what."""
    written = [
        {"revision": item.revision, "rule": rule, "reason": reason, "file_sha256": item.file_sha256}
        for item in planned.revisions
        for rule, reason in item.consent.items()
    ]
    if written:
        session.record.arguments["written_consent"] = written
        session.record.details["written_consent"] = written
        if not planned.needing_consent():
            _record_consent(session, "written in the revision")


def _full_list_hint(session: Session, count: int) -> str:
    """Where every finding is, when the line names only the first few."""
    from tasks.plan.consent_summary import LISTED_FINDINGS

    if count <= LISTED_FINDINGS:
        return ""
    plan = suggestions.command(suggestions.collection_of(session.record.task), "plan")
    where = f"`{plan}` and the run log" if plan else "the run log"
    return f" (every finding: {where})"


def _record_consent(session: Session, how: str) -> None:
    """Who consented and how, in the audit row's arguments (the flag alone is not the story:
    an operator who typed `allow-destructive` consented as much as one who passed the flag)."""
    session.record.arguments["consent"] = how
    session.record.details["consent"] = how


def with_stamp_hint(session: Session, error: DatabaseError, before: tuple[str, ...]) -> Exception:
    """An upgrade from base that meets existing tables: the schema came from elsewhere.

    `local.sync` (or `create_all`, or a restored dump) builds the tables without recording a
    revision; the first revision then fails on its first CREATE. Say how to record it.
    """
    if before or "already exists" not in str(error).lower():
        return error
    stamp = suggestions.command(suggestions.collection_of(session.record.task), "stamp")
    how = f"`{stamp} --rev head`" if stamp else "a stamp at head"
    return DatabaseError(
        f"{error}; the database has tables but no recorded revision (built by local.sync or "
        f"create_all?): if they match the models, record that with {how} instead of upgrading"
    )


def apply_steps(
    session: Session,
    connection: Connection,
    steps: list[RevisionStep],
    operation: Callable[..., Any],
    revision: str,
    *,
    stamping: bool = False,
    guard: StatementGuard | None = None,
) -> None:
    """Run `operation`, reporting each revision as it completes and naming the one that fails.

    Progress is a ticking live line on a terminal and one plain line per revision elsewhere;
    each revision's duration also goes to the run log. With a statement `guard`, every
    statement sent on the migration connection while Alembic runs is judged before it runs.
    """
    from tasks.guard.lock import verify_lock

    session.hold_lock()  # fails closed: nothing is applied outside the migration lock
    applied: list[str] = []
    durations: list[dict[str, Any]] = []
    session.record.details["revisions"] = durations
    script = script_directory(session)
    names = [step_name(step) for step in steps]
    verb = "applying" if not steps or steps[0].is_upgrade else "reverting"

    residue = _ResidueWatch.start(session, connection)

    with (
        Progress(session.console, len(steps), verb) as progress,
        revision_progress.watching(session, connection) as watch,
    ):

        def on_applied(
            revision_id: str, doc: str, is_upgrade: bool, migration_connection: Any
        ) -> None:
            # Inside the revision's transaction, just before Alembic commits it: raising here
            # rolls the revision back (see _verified for the check before it starts).
            verify_lock(f"before revision {revision_id} committed")
            watch.revision_applied()
            if not stamping:  # in the revision's transaction: recorded or forgotten with it
                with statement_guard.trusting(guard):  # the tasks' own bookkeeping
                    if is_upgrade:
                        checksums.revision_applied(
                            session, migration_connection, script, revision_id
                        )
                    else:
                        checksums.revision_reverted(migration_connection, revision_id)
            applied.append(revision_id)
            residue.revision_done()
            done = "applied" if is_upgrade else "reverted"
            if stamping:  # a stamp down names the revision it leaves, not as if it were stamped
                done = "stamped" if is_upgrade else "unstamped"
            seconds = progress.finish(f"{done} {revision_id} {doc}".rstrip())
            durations.append({"revision": revision_id, "seconds": round(seconds, 3)})
            if len(applied) < len(names):
                progress.start(names[len(applied)])

        if names:
            progress.start(names[0])
        try:
            with interrupts.stops_first():
                with backfill_progress(session, progress):
                    _migrate(session, connection, on_applied, operation, revision, watch, guard)
                watch.run_finished()
        except DatabaseError as error:
            if getattr(error, "in_env_py", False):
                where = env_py_path(session)
                raise DatabaseError(f"{where} failed: {error}{ENV_PY_HINT}") from None
            failed = _failed_step(steps, applied)
            if failed:
                advice = _what_it_left(session, residue, watch, failed, str(error))
                raise DatabaseError(f"revision {failed} failed: {error}{advice}") from None
            raise
        except MigrationsError as error:  # a lost lock, a refused statement
            failed = _failed_step(steps, applied) if watch.in_progress() else None
            if failed:
                left = _what_it_left(session, residue, watch, failed, str(error))
                if not left and isinstance(error, LockLost):
                    left = f"; the revision in progress ({failed}) was rolled back"
                error.args = (f"{error}{left}",)
            raise
        except KeyboardInterrupt as stop:  # Ctrl-C, SIGTERM: on MySQL the DDL stays all the same
            failed = _failed_step(steps, applied)
            if failed:
                what = f"stopped (exit {getattr(stop, 'exit_code', 130)})"
                left = _what_it_left(session, residue, watch, failed, what)
                stop.residue = left  # type: ignore[attr-defined]
            raise
        finally:
            after = database_heads(connection, session)
            session.record.revision_after = list(after)
    _verify_reached(session, steps, after)
    session.console.line(f"{session.environment.name}: now at {revision_ids(after) or 'base'}")


@contextlib.contextmanager
def backfill_progress(session: Session, progress: Any) -> Iterator[None]:
    """`op.backfill` reports on the revision's live line (terminals) or in plain lines, and
    what it did goes into the audit row's arguments and the run log."""
    from tasks.online.progress import Sink, attach

    results: list[dict[str, Any]] = []
    is_terminal = session.console.is_terminal()
    sink = Sink(
        status=progress.detail if is_terminal else None, line=session.console.line, results=results
    )
    try:
        with attach(sink):
            yield
    finally:
        if results:
            session.record.arguments["backfills"] = results
            session.record.details["backfills"] = results


def _migrate(
    session: Session,
    connection: Connection,
    on_applied: Callable[[str, str, bool, Any], None],
    operation: Callable[..., Any],
    revision: str,
    watch: revision_progress.RevisionWatch,
    guard: StatementGuard | None = None,
) -> None:
    """Run Alembic's `operation` on the task's connection, or, with `migrations.driver: keep`
    and an async URL, on a connection of the application's own driver inside an event loop
    (`tasks.core.async_driver`), handed to env.py the same way. The statement guard (first, so
    a refused statement is never recorded as started) and the revision watch listen on whichever
    connection the revisions run on."""

    def run(migration_connection: Connection) -> None:
        handover = handover_for(session, migration_connection)
        if session.environment.migration_url is not None:
            # Asked here, in the thread and event loop the async connection belongs to.
            handover.database_identity = identity(migration_connection)
        handover.on_revision_applied = on_applied
        if guard is not None:  # env.py's own connection, when it builds one, is guarded too
            handover.on_migration_connection = guard.attach
        config = alembic_config(session.settings, handover, stdout=ConsoleStream(session))
        watch.note_session(migration_connection)
        with (
            statement_guard.guarding(guard, migration_connection),
            watch.listening(migration_connection),
        ):
            run_alembic(session, operation, config, revision)

    if session.environment.migration_url is None:
        run(connection)
        return
    from tasks.core.async_driver import run_on_async_driver

    connection.rollback()  # the task's own connection waits, holding nothing
    run_on_async_driver(session.environment, session.settings, run)


def _what_it_left(
    session: Session,
    residue: _ResidueWatch,
    watch: revision_progress.RevisionWatch,
    failed: str,
    error: str,
) -> str:
    """The end of a failed revision's error line: what it left and the way out. A revision
    whose statements committed on their own stays failed (`repair`), and says so."""
    advice = residue.explain(failed)
    left = session.record.details.get("ddl_residue")
    ending = watch.failed(error, left)
    if watch.row_id is None:
        return advice
    phrases = ", ".join((left or {}).get("left_behind") or [])
    try:
        at = revision_ids(database_heads(watch.connection, session)) or "base"
    except MigrationsError:
        at = "its previous revision"
    where = f" while the database stays at {at}"
    return (f"; it left {phrases}{where}" if phrases else where) + ending


class _ResidueWatch:
    """Schema snapshots around each revision where DDL commits implicitly (MySQL, MariaDB).

    A failed revision there leaves its earlier DDL behind; the snapshot taken before it began
    tells exactly what, and the run log and the error carry it with the way back.
    """

    def __init__(self, session: Session, connection: Connection | None) -> None:
        self.session = session
        self.connection = connection
        self.before: frozenset[Any] | None = None

    @classmethod
    def start(cls, session: Session, connection: Connection) -> _ResidueWatch:
        if not ddl_residue.takes_snapshots(session.environment.dialect):
            return cls(session, None)
        watch = cls(session, connection)
        watch.revision_done()
        connection.rollback()  # as database_heads: each revision starts its own transaction
        return watch

    def revision_done(self) -> None:
        """The state after one revision is the state before the next."""
        if self.connection is not None:
            self.before = ddl_residue.snapshot(self.connection)

    def explain(self, failed: str) -> str:
        """`; <what is left and how to recover>` for the error line, or "" when nothing is."""
        if self.connection is None or self.before is None:
            return ""
        try:
            residue = ddl_residue.compare(self.before, ddl_residue.snapshot(self.connection))
        except Exception as error:  # the revision's own error matters more
            return f"; could not read what it left behind: {first_line(error)}"
        if not residue:
            return ""
        self.session.record.details["ddl_residue"] = residue.as_dict()
        console = self.session.console
        console.line(f"left behind by {failed} (MySQL/MariaDB DDL commits as it runs):")
        for phrase in residue.describe():
            console.line(f"  {phrase}")
        if residue.undo_statements():
            console.line("to undo what it added:")
            for statement in residue.undo_statements():
                console.line(f"  {statement};")
        at = revision_ids(database_heads(self.connection, self.session)) or "base"
        collection = suggestions.collection_of(self.session.record.task)
        stamp = suggestions.command(collection, "stamp", f"--rev {failed}")
        return "; " + ddl_residue.recovery_advice(residue, stamp=stamp, failed=failed, at=at)


def alembic_runner(
    script: ScriptDirectory, direction: str, guard: StatementGuard | None = None
) -> Callable[[Config, str], None]:
    """`alembic.command.upgrade`/`downgrade` on the ScriptDirectory this run already loaded.

    The commands would load every revision file again; on a long history that second read is
    most of the wrapper's cost over plain Alembic. Steps are still planned by Alembic, from the
    heads it reads inside the migration context.
    """
    from alembic.runtime.environment import EnvironmentContext

    def run(config: Config, revision: str) -> None:
        def steps(heads: Any, _context: Any) -> Iterator[Any]:
            if direction == "upgrade":
                return _verified(planned_upgrade(script, revision, tuple(heads)), guard)
            return _verified(planned_downgrade(script, revision, tuple(heads)), guard)

        with EnvironmentContext(config, script, fn=steps, destination_rev=revision):
            script.run_env()

    return run


def _verified(steps: list[Any], guard: StatementGuard | None = None) -> Iterator[Any]:
    """Alembic's steps, handed over one at a time after checking that the migration lock is
    still ours: Alembic takes the next step only when it is about to begin its transaction
    (which is also when the statement guard starts applying that revision's consent)."""
    from tasks.guard.lock import verify_lock

    for step in steps:
        verify_lock(f"before revision {step.revision.revision} started")
        if guard is not None:
            guard.enter(step.revision.revision)
        revision_progress.step_starting(
            step.revision.revision, is_upgrade=step.is_upgrade, module=step.revision.module
        )
        yield step


def step_name(step: RevisionStep) -> str:
    revision_id = step.revision.revision
    return f"{revision_id} {step.doc or ''}".rstrip()


def _verify_reached(session: Session, steps: list[RevisionStep], after: tuple[str, ...]) -> None:
    """Alembic returning is not proof: the version table must show the planned end state."""
    if not steps:
        return
    last = steps[-1]
    expected = set(last.to_revisions)
    if last.is_upgrade:
        reached = expected <= set(after)
    else:
        reached = expected <= set(after) and last.from_revisions[0] not in after
    if not reached:
        raise DatabaseError(
            f"{session.environment.name}: expected to reach {revision_ids(expected) or 'base'}, "
            f"database is at {revision_ids(after) or 'base'}"
        )


def _failed_step(steps: list[RevisionStep], applied: list[str]) -> str | None:
    for step in steps:
        revision_id = step.revision.revision
        if revision_id not in applied:
            return revision_id
    return None


def run_offline(session: Session, operation: Callable[..., Any], revision: str) -> None:
    """Print the SQL Alembic would run; no connection is opened, and no URL is needed."""

    require_short(revision)
    _require_offline_range(revision)
    session = offline_session(session)
    config = alembic_config(
        session.settings,
        handover_for(session, None),
        stdout=ConsoleStream(session),
        sql_output=ConsoleStream(session),
    )
    run_alembic(session, operation, config, revision, sql=True)


def _require_offline_range(revision: str) -> None:
    """--sql takes TARGET or FROM:TO. Alembic splits on every colon and unpacks two, so
    `a:b:c` was a ValueError reported as an unexpected failure (exit 1) instead of bad input."""
    parts = revision.split(":")
    if len(parts) > 2 or (len(parts) == 2 and not all(part.strip() for part in parts)):
        raise UsageError(f"--rev {revision!r}: --sql takes a revision or one FROM:TO range")
