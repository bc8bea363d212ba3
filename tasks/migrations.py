"""Alembic operations for one environment, each a short function over a Session.

Modelled on `alembic.command`: every function resolves what it will do before doing it, shows
it, asks when the operation is dangerous, then lets Alembic act on the task's own connection.
Revision arguments are validated against the scripts first, so a typo never reaches a prompt or
a database.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks import ddl_residue, drift
from tasks.alembic_support import EnvHandover, alembic_config
from tasks.engines import describe_database_error
from tasks.errors import DatabaseError, DifferencesFound, Refused, UsageError
from tasks.plan import Plan, build_plan, print_plan
from tasks.redaction import redact
from tasks.session import Session

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.runtime.migration import MigrationStep
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import Connection


# --- read-only ------------------------------------------------------------------------------


def current(session: Session) -> list[str]:
    """Print the database's revision(s) and whether they are the scripts' head(s)."""
    script = _script(session)
    with session.connect() as connection:
        heads = _database_heads(connection, session)
    script_heads = set(script.get_heads())
    name = session.environment.name
    if not heads:
        session.console.line(f"{name}: no revision applied (base); head is {_ids(script_heads)}")
    for revision in heads:
        marker = " (head)" if revision in script_heads else ""
        session.console.line(f"{name}: {revision}{marker} {_doc(script, revision)}".rstrip())
    if _unknown(script, heads):
        session.console.line(f"{name}: at a revision the scripts do not know")
        return list(heads)
    pending = _upgrade_steps(script, "heads", heads) if script_heads else []
    if pending:
        session.console.line(f"{name}: behind head by {len(pending)} revision(s)")
    else:
        session.console.line(f"{name}: at head")
    return list(heads)


def history(session: Session, *, verbose: bool = False) -> None:
    """Alembic's history, newest first, with the database's revision marked (current)."""
    from alembic import command

    with session.connect() as connection:
        _database_heads(connection, session)
        config = _config(session, connection)
        _alembic(session, command.history, config, indicate_current=True, verbose=verbose)


def heads(session: Session) -> list[str]:
    """The scripts' head revision(s); more than one means a merge is needed."""
    script = _script(session)
    revisions = list(script.get_heads())
    for revision in revisions:
        session.console.line(f"{revision} (head) {_doc(script, revision)}".rstrip())
    if len(revisions) > 1:
        session.console.warning(
            f"{len(revisions)} heads: merge them (alembic merge heads) before upgrading to 'head'"
        )
    return revisions


def check(session: Session) -> None:
    """Compare the models with the live database, read-only; differences are an error."""
    with session.connect() as connection:
        _database_heads(connection, session)
        try:
            differences = drift.compare(connection, session.metadata())
        except Exception as error:
            raise _as_database_error(session, error) from None
        connection.rollback()
    name = session.environment.name
    if not differences:
        session.console.line(f"{name}: models and database match")
        return
    for difference in differences:
        session.console.line(f"  {drift.describe(difference)}")
    session.record.details["differences"] = [drift.describe(d) for d in differences]
    raise DifferencesFound(f"{name}: {len(differences)} difference(s) between models and database")


def preflight(session: Session, revision: str = "head", *, allow_destructive: bool = False) -> None:
    """Gate for deploy pipelines: every check runs and prints; the first failure sets the code."""
    from tasks.errors import CheckFailed, ExitCode

    script = _script(session)
    failures: list[tuple[ExitCode, str]] = []

    def report(ok: bool, code: ExitCode, text: str) -> None:
        session.console.line(f"  {'ok    ' if ok else 'FAILED'} {text}")
        if not ok:
            failures.append((code, text))

    script_heads = tuple(script.get_heads())
    single = len(script_heads) == 1 or revision not in {"head"}
    report(single, ExitCode.PREFLIGHT_HEADS, f"heads: {_ids(script_heads) or 'none'}")
    with session.connect() as connection:
        current_heads = _database_heads(connection, session)
        version = _server_version(session, connection)
    unknown = [head for head in current_heads if not _known(script, head)]
    report(
        not unknown,
        ExitCode.PREFLIGHT_UNKNOWN_REVISION,
        f"database revision {_ids(current_heads) or 'base'}"
        + (f": unknown to the scripts: {_ids(unknown)}" if unknown else " is known to the scripts"),
    )
    if single and not unknown:
        steps = _upgrade_steps(script, revision, current_heads)
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
            f"{len(steps)} pending revision(s), {len(pending) - blocking} destructive and "
            f"{blocking} blocking statement(s)"
            + ("" if not pending else " (--allow-destructive to accept)"),
        )
        for item in planned.revisions:
            rules = ", ".join(sorted({finding.rule for finding in item.findings})) or "clean"
            session.console.line(f"           {item.revision} {item.message}: {rules}")
        session.record.details["pending"] = [item.revision for item in planned.revisions]
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
    from tasks.ci_checks import models_match, throwaway_database

    scratch = str(session.settings.extra.get("ci", {}).get("postgres_url") or "").strip()
    backends = ["sqlite"]
    if session.environment.dialect == "postgresql" and scratch:
        backends.insert(0, "postgresql")
    for backend in backends:
        try:
            with throwaway_database(session, backend, {"postgres_url": scratch}) as (
                environment,
                connection,
            ):
                outcome = models_match(session, environment, connection)
        except DatabaseError as error:  # the scratch server is unusable: fall back to SQLite
            session.console.line(f"  (history check on SQLite: {error})")
            continue
        return [] if outcome.ok else [outcome.detail]
    return ["no throwaway database to build the history in"]


def _unknown(script: ScriptDirectory, heads: tuple[str, ...]) -> list[str]:
    return [head for head in heads if not _known(script, head)]


def _require_known(session: Session, script: ScriptDirectory, heads: tuple[str, ...]) -> None:
    """Nothing can be planned from a revision the scripts lack; say so instead of blaming --rev."""
    unknown = _unknown(script, heads)
    if unknown:
        raise Refused(
            f"{session.environment.name} database is at {_ids(unknown)}, which the scripts do "
            "not know (a revision file missing from this checkout?); update the checkout, or "
            "stamp a known revision"
        )


def _known(script: ScriptDirectory, revision: str) -> bool:
    """Whether the scripts have `revision` (ScriptDirectory raises CommandError when not)."""
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    try:
        return script.get_revision(revision) is not None
    except (CommandError, RevisionError):
        return False


# --- changes --------------------------------------------------------------------------------


def plan(session: Session, revision: str = "head", *, as_json: bool = False) -> Plan:
    """Read-only: the revisions between the database and `revision`, their SQL and lint.

    A target below the database's revision (-1, base, an ancestor) plans the downgrade, linted
    the same way, so the revert can be reviewed before anyone runs it.
    """
    script = _script(session)
    with session.connect() as connection:
        before = _database_heads(connection, session)
        version = _server_version(session, connection)
    _require_known(session, script, before)
    direction, steps = _steps_towards(script, revision, before)
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
    else:
        print_plan(session.console, planned, show_sql=True)
    session.record.details["pending"] = [item.revision for item in planned.revisions]
    return planned


def _steps_towards(
    script: ScriptDirectory, revision: str, heads: tuple[str, ...]
) -> tuple[str, list[MigrationStep]]:
    """("upgrade", steps) when `revision` is ahead of the database, else ("downgrade", steps)."""
    if revision.startswith("-") or (revision == "base" and heads):
        return "downgrade", _downgrade_steps(script, revision, heads)
    try:
        steps = _upgrade_steps(script, revision, heads)
    except UsageError as upgrade_error:
        try:
            return "downgrade", _downgrade_steps(script, revision, heads)
        except UsageError:
            raise upgrade_error from None
    if not steps and heads:  # at the target already, or below it: then it is a downgrade
        try:
            reverts = _downgrade_steps(script, revision, heads)
        except UsageError:
            reverts = []
        if reverts:
            return "downgrade", reverts
    return "upgrade", steps


def _server_version(session: Session, connection: Connection) -> tuple[int, ...] | None:
    """PostgreSQL's version, so squawk applies the rules of the server the plan is for."""
    if session.environment.dialect != "postgresql":
        return None
    return connection.dialect.server_version_info


def upgrade(
    session: Session,
    revision: str = "head",
    *,
    sql: bool = False,
    backup: bool = True,
    allow_destructive: bool = False,
) -> None:
    """Apply pending revisions up to `revision`.

    On a protected environment: the plan with SQL and lint, a backup (unless `backup` is
    False), a typed confirmation, destructive statements only with `allow_destructive` (or
    typed consent), then a check that the database reached the target.
    """
    from alembic import command

    if sql:
        _offline(session, command.upgrade, revision)
        return
    script = _script(session)
    with session.connect() as connection:
        before = _database_heads(connection, session)
        _require_known(session, script, before)
        steps = _upgrade_steps(script, revision, before)
        name = session.environment.name
        if not steps:
            _nothing_to(session, "upgrade", before)
            return
        if session.environment.protected:
            planned = _shown_plan(session, connection, script, steps, "upgrade", before, revision)
            action = f"Upgrade {name} ({session.environment.masked_url}) to {revision}"
            _refuse_before_backup(session, planned, action, allow_destructive)
            _backup_before(session, requested=backup, mandatory=False)
            _require_consent(session, planned, allow_destructive)
            session.confirm(action)
        else:
            _show_steps(session, f"{name}: {len(steps)} revision(s) to apply", steps)
        _apply(session, connection, steps, _run_with(script, "upgrade"), revision)


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
        _offline(session, command.downgrade, revision)
        return
    script = _script(session)
    with session.connect() as connection:
        before = _database_heads(connection, session)
        _require_known(session, script, before)
        steps = _downgrade_steps(script, revision, before)
        name = session.environment.name
        if not steps:
            _nothing_to(session, "downgrade", before)
            return
        action = f"Downgrade {name} ({session.environment.masked_url}) to {revision}"
        if not session.environment.shared:
            _show_steps(session, f"{name}: {len(steps)} revision(s) to revert", steps)
        else:
            _shown_plan(session, connection, script, steps, "downgrade", before, revision)
            if not session.can_prompt():
                session.confirm(action)  # no --yes and nobody to ask: refuse before the backup
            _backup_before(session, requested=backup, mandatory=session.environment.protected)
        # On stdout, next to the question: stderr keeps the one line that says how it ended.
        session.console.line("WARNING: a downgrade can drop tables and columns and lose their data")
        session.confirm(action)
        _apply(session, connection, steps, _run_with(script, "downgrade"), revision)


def _nothing_to(session: Session, direction: str, before: tuple[str, ...]) -> None:
    """Say there is nothing to do; the audit records the revision as unchanged."""
    where = _ids(before) or "base"
    session.console.line(f"{session.environment.name}: nothing to {direction}, already at {where}")
    session.record.revision_after = list(before)


def _shown_plan(
    session: Session,
    connection: Connection,
    script: ScriptDirectory,
    steps: list[MigrationStep],
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
        server_version=_server_version(session, connection),
    )
    print_plan(session.console, planned, show_sql=True)
    return planned


def _refuse_before_backup(
    session: Session, planned: Plan, action: str, allow_destructive: bool
) -> None:
    """Refusals that need no human are made before the backup, not after it.

    Without a terminal, destructive or blocking statements without --allow-destructive, or a
    protected upgrade without --yes, can only end in a refusal: a backup of a large production
    database first would cost its whole duration for nothing.
    """
    if session.can_prompt():
        return
    _require_consent(session, planned, allow_destructive)
    session.confirm(action)


def _backup_before(session: Session, *, requested: bool, mandatory: bool) -> None:
    """A backup before a risky change; skipping it must be explicit, and is not always allowed."""
    if not requested:
        if mandatory:
            raise Refused(
                f"a backup is mandatory before this on {session.environment.name}; drop --no-backup"
            )
        session.console.warning("--no-backup: going ahead without a backup")
        session.record.details["backup"] = None
        return
    from tasks.backups import create_backup

    path = create_backup(session)
    session.record.details["backup"] = str(path)


def _require_consent(session: Session, planned: Plan, allow_destructive: bool) -> None:
    """Destructive and blocking statements need --allow-destructive or typed consent; --yes
    answers the environment's confirmation, never this one."""
    pending = planned.needing_consent()
    if not pending or allow_destructive:
        return
    rules = ", ".join(sorted({f"{revision}:{finding.rule}" for revision, finding in pending}))
    session.record.details["needs_consent"] = rules
    what = f"{len(pending)} destructive or blocking statement(s) pending ({rules})"
    if not session.can_prompt():
        raise Refused(f"{what}: pass --allow-destructive to apply them; nothing changed")
    session.confirmer.ask(
        f"{what}; to apply them anyway", type_to_confirm="allow-destructive", honour_yes=False
    )


def stamp(session: Session, revision: str, *, sql: bool = False) -> None:
    """Record `revision` as applied without running anything, after confirmation."""
    from alembic import command

    script = _script(session)
    _validate_revision(script, revision)
    if sql:
        _offline(session, command.stamp, revision)
        return
    with session.connect() as connection:
        before = _database_heads(connection, session)
        name = session.environment.name
        session.console.line(f"{name}: at {_ids(before) or 'base'}, stamping {revision}")
        operation: Callable[..., Any] = command.stamp
        unknown = _unknown(script, before)
        if unknown:
            # Alembic cannot move from a revision it does not know; purge replaces it outright.
            session.console.line(
                f"WARNING: {_ids(unknown)} is unknown to the scripts and will be replaced"
            )
            operation = functools.partial(command.stamp, purge=True)
        session.confirm(f"Stamp {name} ({session.environment.masked_url}) as {revision}")
        _apply(session, connection, [], operation, revision, stamping=True)


def revision(session: Session, message: str, *, autogenerate: bool = False) -> Path | None:
    """Write a new revision file; with autogenerate, from the models' differences.

    Refuses unless the database is at head: autogenerate against a lagging database writes the
    pending revisions' changes a second time.
    """
    from alembic import command

    if not message.strip():
        raise UsageError("a revision needs a message: -m 'what it changes'")
    script = _script(session)
    script_heads = tuple(script.get_heads())
    if len(script_heads) > 1:
        raise UsageError(
            f"several heads {_ids(script_heads)}: merge them first (alembic merge heads)"
        )
    with session.connect() as connection:
        current_heads = _database_heads(connection, session)
        connection.rollback()
        if set(current_heads) != set(script_heads):
            raise Refused(
                f"{session.environment.name} database is at {_ids(current_heads) or 'base'}, "
                f"not at head {_ids(script_heads) or 'base'}; upgrade it first"
            )
        handover = _handover(session, connection)
        handover.write_empty_revision = not autogenerate
        config = alembic_config(session.settings, handover, stdout=io.StringIO())
        created = _alembic(
            session, command.revision, config, message=message, autogenerate=autogenerate
        )
        connection.rollback()
    scripts = created if isinstance(created, list) else [created]
    scripts = [item for item in scripts if item is not None]
    if not scripts:
        session.console.line("no changes between the models and the database: no revision written")
        return None
    path = Path(scripts[0].path)
    session.record.details["revision_file"] = str(path)
    session.console.line(f"created {_display_path(session, path)}")
    _report_operations(session, handover.revision_directives)
    return path


# --- helpers --------------------------------------------------------------------------------


def _script(session: Session) -> ScriptDirectory:
    """The run's ScriptDirectory, read once: a fleet hands the same one to every target."""
    from alembic.script import ScriptDirectory

    if session._script is None:
        session._script = ScriptDirectory.from_config(alembic_config(session.settings))
    return session._script


def _config(session: Session, connection: Connection | None) -> Config:
    return alembic_config(
        session.settings, _handover(session, connection), stdout=_StdoutProxy(session)
    )


def _handover(session: Session, connection: Connection | None) -> EnvHandover:
    return EnvHandover(
        environment=session.environment,
        metadata_path=session.settings.metadata,
        connection=connection,
        metadata=session.metadata(),
        connect_timeout=session.settings.connect_timeout,
    )


class _StdoutProxy(io.TextIOBase):
    """Alembic's printed output, routed through the console (and its masking)."""

    def __init__(self, session: Session) -> None:
        self._console = session.console
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self._console.line(line)
        return len(text)

    def flush(self) -> None:
        if self._buffer:
            self._console.line(self._buffer)
            self._buffer = ""


def _database_heads(connection: Connection, session: Session) -> tuple[str, ...]:
    """The database's revision(s); the first read of a run is recorded as `revision_before`,
    which is why read-only tasks call it even when they do not use the answer."""
    from alembic.migration import MigrationContext

    try:
        schema = session.environment.schema
        options = {"version_table_schema": schema} if schema else {}
        heads = MigrationContext.configure(connection, opts=options).get_current_heads()
    except Exception as error:
        raise _as_database_error(session, error) from None
    connection.rollback()  # end the read so Alembic starts each revision in its own transaction
    if session.record.revision_before is None:
        session.record.revision_before = list(heads)
    return tuple(heads)


def _upgrade_steps(
    script: ScriptDirectory, revision: str, heads: tuple[str, ...]
) -> list[MigrationStep]:
    """What `alembic upgrade` would run (Alembic's own planner, not a re-implementation)."""
    return _plan(lambda: script._upgrade_revs(revision, heads), revision)


def _downgrade_steps(
    script: ScriptDirectory, revision: str, heads: tuple[str, ...]
) -> list[MigrationStep]:
    if revision.startswith("-") and len(heads) > 1:
        # Alembic would revert whichever head it lists first (and warns that it will refuse).
        raise UsageError(
            f"revision {revision!r} is ambiguous: the database is at {len(heads)} heads "
            f"({_ids(heads)}); name the revision to go down to"
        )
    return _plan(lambda: script._downgrade_revs(revision, heads), revision)


def _plan(planner: Callable[[], list[MigrationStep]], revision: str) -> list[MigrationStep]:
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    try:
        return planner()
    except (CommandError, RevisionError) as error:
        raise UsageError(f"revision {revision!r}: {_first_line(error)}") from None
    except AssertionError:  # Alembic's RevisionMap asserts on a relative step past the graph
        raise UsageError(
            f"revision {revision!r}: no such revision (a relative step past base or head?)"
        ) from None


def _validate_revision(script: ScriptDirectory, revision: str) -> None:
    _plan(lambda: list(script.get_revisions(revision)), revision)


def _show_steps(session: Session, title: str, steps: list[MigrationStep]) -> None:
    session.console.line(title + ":")
    for step in steps:
        session.console.line(f"  {_step_name(step)}")


def _apply(
    session: Session,
    connection: Connection,
    steps: list[MigrationStep],
    operation: Callable[..., Any],
    revision: str,
    *,
    stamping: bool = False,
) -> None:
    """Run `operation`, reporting each revision as it completes and naming the one that fails.

    Progress is a ticking live line on a terminal and one plain line per revision elsewhere;
    each revision's duration also goes to the run log.
    """
    from tasks.console import Progress

    applied: list[str] = []
    durations: list[dict[str, Any]] = []
    session.record.details["revisions"] = durations
    names = [_step_name(step) for step in steps]
    verb = "applying" if not steps or steps[0].is_upgrade else "reverting"

    residue = _ResidueWatch.start(session, connection)

    with Progress(session.console, len(steps), verb) as progress:

        def on_applied(revision_id: str, doc: str, is_upgrade: bool) -> None:
            applied.append(revision_id)
            residue.revision_done()
            done = "stamped" if stamping else "applied" if is_upgrade else "reverted"
            seconds = progress.finish(f"{done} {revision_id} {doc}".rstrip())
            durations.append({"revision": revision_id, "seconds": round(seconds, 3)})
            if len(applied) < len(names):
                progress.start(names[len(applied)])

        if names:
            progress.start(names[0])
        handover = _handover(session, connection)
        handover.on_revision_applied = on_applied
        config = alembic_config(session.settings, handover, stdout=_StdoutProxy(session))
        try:
            _alembic(session, operation, config, revision)
        except DatabaseError as error:
            failed = _failed_step(steps, applied)
            if failed:
                advice = residue.explain(failed)
                raise DatabaseError(f"revision {failed} failed: {error}{advice}") from None
            raise
        finally:
            after = _database_heads(connection, session)
            session.record.revision_after = list(after)
    _verify_reached(session, steps, after)
    session.console.line(f"{session.environment.name}: now at {_ids(after) or 'base'}")


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
        connection.rollback()  # as _database_heads: each revision starts its own transaction
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
            return f"; could not read what it left behind: {_first_line(error)}"
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
        at = _ids(_database_heads(self.connection, self.session)) or "base"
        collection = self.session.record.task.rsplit(".", 1)[0]
        return "; " + ddl_residue.recovery_advice(
            residue, environment_task=collection, failed=failed, at=at
        )


def _run_with(script: ScriptDirectory, direction: str) -> Callable[[Config, str], None]:
    """`alembic.command.upgrade`/`downgrade` on the ScriptDirectory this run already loaded.

    The commands would load every revision file again; on a long history that second read is
    most of the wrapper's cost over plain Alembic. Steps are still planned by Alembic, from the
    heads it reads inside the migration context.
    """
    from alembic.runtime.environment import EnvironmentContext

    def run(config: Config, revision: str) -> None:
        def steps(heads: Any, _context: Any) -> list[Any]:
            if direction == "upgrade":
                return script._upgrade_revs(revision, heads)
            return script._downgrade_revs(revision, heads)

        with EnvironmentContext(config, script, fn=steps, destination_rev=revision):
            script.run_env()

    return run


def _step_name(step: MigrationStep) -> str:
    revision_id = step.revision.revision  # type: ignore[attr-defined]
    return f"{revision_id} {step.doc or ''}".rstrip()


def _verify_reached(session: Session, steps: list[MigrationStep], after: tuple[str, ...]) -> None:
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
            f"{session.environment.name}: expected to reach {_ids(expected) or 'base'}, "
            f"database is at {_ids(after) or 'base'}"
        )


def _failed_step(steps: list[MigrationStep], applied: list[str]) -> str | None:
    for step in steps:
        revision_id = step.revision.revision  # type: ignore[attr-defined]
        if revision_id not in applied:
            return revision_id
    return None


def _offline(session: Session, operation: Callable[..., Any], revision: str) -> None:
    """Print the SQL Alembic would run; no connection is opened."""
    config = alembic_config(
        session.settings,
        _handover(session, None),
        stdout=_StdoutProxy(session),
        sql_output=_StdoutProxy(session),
    )
    _alembic(session, operation, config, revision, sql=True)


def _alembic(session: Session, operation: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run an Alembic command; its errors become our typed, masked one-liners."""
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    try:
        return operation(*args, **kwargs)
    except (CommandError, RevisionError) as error:
        raise UsageError(redact(_first_line(error))) from None
    except Refused:
        raise
    except AssertionError as error:
        if _from_revision_map(error):  # a relative step past the graph (--sql: head+1, @)
            raise UsageError("no such revision (a relative step past base or head?)") from None
        raise _as_database_error(session, error) from None
    except Exception as error:
        raise _as_database_error(session, error) from None


def _from_revision_map(error: BaseException) -> bool:
    """Whether Alembic's RevisionMap raised `error` (it asserts instead of raising an error)."""
    import traceback
    from pathlib import PurePath

    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and PurePath(frames[-1].filename).parts[-3:] == (
        "alembic",
        "script",
        "revision.py",
    )


def _as_database_error(session: Session, error: Exception) -> Exception:
    from sqlalchemy.exc import SQLAlchemyError

    from tasks.errors import MigrationsError

    if isinstance(error, MigrationsError):
        return error
    if isinstance(error, SQLAlchemyError):
        return DatabaseError(f"{session.environment.name}: {describe_database_error(error)}")
    return DatabaseError(
        f"{session.environment.name}: {type(error).__name__}: {redact(str(error))}"
    )


def _report_operations(session: Session, directives: list[Any]) -> None:
    """One line per operation in the new revision; drops are shouted about."""
    drops: list[str] = []
    for directive in directives:
        upgrade_ops = getattr(directive, "upgrade_ops", None)
        if upgrade_ops is None:
            continue
        for difference in drift.flatten(upgrade_ops.as_diffs()):
            line = drift.describe(difference)
            session.console.line(f"  {line}")
            if difference[0] in drift.DESTRUCTIVE_KINDS:
                drops.append(line)
    if drops:
        session.record.details["drops"] = drops
        session.console.warning(
            "THIS REVISION DROPS " + "; ".join(drops) + ". If a model was not imported "
            "(database/imports.py, migrations.metadata), delete the file instead of applying it."
        )


def _display_path(session: Session, path: Path) -> str:
    """Relative to the project when inside it; the scripts may live elsewhere (alembic_ini)."""
    try:
        return str(path.resolve().relative_to(session.settings.root))
    except ValueError:
        return str(path)


def _ids(revisions: Any) -> str:
    return ", ".join(sorted(revisions))


def _doc(script: ScriptDirectory, revision: str) -> str:
    if not _known(script, revision):
        return "(unknown to the scripts in alembic/versions)"
    found = script.get_revision(revision)
    return f"- {found.doc}" if found is not None and found.doc else ""


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
