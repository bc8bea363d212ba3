"""Alembic operations for one environment, each a short function over a Session.

Modelled on `alembic.command`: every function resolves what it will do before doing it, shows
it, asks when the operation is dangerous, then lets Alembic act on the task's own connection.
Revision arguments are validated against the scripts first, so a typo never reaches a prompt or
a database.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core.alembic_config import EnvHandover, alembic_config, without_ini_logging
from tasks.core.console import plural
from tasks.core.engines import describe_database_error
from tasks.core.environments import url_is_set
from tasks.core.errors import (
    ConfigError,
    DatabaseError,
    DifferencesFound,
    MigrationsError,
    Refused,
    UsageError,
)
from tasks.core.redaction import redact
from tasks.core.session import Session
from tasks.guard import statement_guard
from tasks.lint import residue as ddl_residue
from tasks.plan.steps import Plan, build_plan, print_plan, summary
from tasks.schema import drift

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.runtime.migration import MigrationStep
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import Connection

    from tasks.guard.statement_guard import StatementGuard


# --- read-only ------------------------------------------------------------------------------


def current(session: Session) -> list[str]:
    """Print the database's revision(s) and whether they are the scripts' head(s)."""
    script = script_directory(session)
    with session.connect() as connection:
        heads = database_heads(connection, session)
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
        session.console.line(f"{name}: {revision}{marker} {_doc(script, revision)}".rstrip())
    if _unknown(script, heads):
        session.console.line(f"{name}: at a revision the scripts do not know")
        return list(heads)
    pending = upgrade_steps(script, "heads", heads) if script_heads else []
    if pending:
        session.console.line(f"{name}: behind head by {plural(len(pending), 'revision')}")
    else:
        session.console.line(f"{name}: at head")
    return list(heads)


def history(session: Session, *, verbose: bool = False) -> None:
    """Alembic's history, newest first, with the database's revision marked (current)."""
    from alembic import command

    from tasks.migrate.verbs import current_if_configured

    # Reading needs no database (issue 12.2); with none, or one at base, nothing is marked.
    if not current_if_configured(session):
        config = alembic_config(session.settings, stdout=_StdoutProxy(session))
        run_alembic(session, command.history, config, verbose=verbose)
        return
    with session.connect() as connection:
        database_heads(connection, session)
        config = _config(session, connection)
        run_alembic(session, command.history, config, indicate_current=True, verbose=verbose)


def heads(session: Session) -> list[str]:
    """The scripts' head revision(s); more than one means a merge is needed."""
    script = script_directory(session)
    revisions = list(script.get_heads())
    for revision in revisions:
        session.console.line(f"{revision} (head) {_doc(script, revision)}".rstrip())
    if len(revisions) > 1:
        session.console.warning(
            f"{len(revisions)} heads: merge them ({_merge_command(session)}) before upgrading "
            "to 'head'"
        )
    return revisions


def check(session: Session) -> None:
    """Compare the models with the live database, read-only; differences are an error."""
    from tasks.core import comparison

    with session.connect() as connection:
        database_heads(connection, session)
        rules = comparison.for_session(session, connection)
        try:
            differences = drift.compare(connection, session.metadata(), rules)
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
    raise DifferencesFound(
        f"{name}: {plural(len(differences), 'difference')} between models and database"
    )


def preflight(session: Session, revision: str = "head", *, allow_destructive: bool = False) -> None:
    """Gate for deploy pipelines: every check runs and prints; the first failure sets the code."""
    from tasks.core.errors import CheckFailed, ExitCode

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
        version = _server_version(session, connection)
    unknown = [head for head in current_heads if not _known(script, head)]
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
    from tasks.ci.checks import models_match, throwaway_database

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
            f"{session.environment.name} database is at {revision_ids(unknown)}, which the "
            "scripts do not know (a revision file missing from this checkout?); update the "
            "checkout, or stamp a known revision"
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
    elif as_markdown:  # for a pull-request comment or $GITHUB_STEP_SUMMARY (issue 12.7)
        from tasks.plan.markdown import plan_markdown

        session.console.line(plan_markdown(planned.as_dict()).rstrip("\n"))
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
        steps = upgrade_steps(script, revision, heads)
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

    On a protected environment: the plan with SQL and lint, destructive statements only with
    `allow_destructive` (or typed consent), a typed confirmation, then the backup (unless
    `backup` is False; after the answer, so a "no" leaves no dump behind), then a check that
    the database reached the target. The migration lock is held from before the plan.
    """
    from alembic import command

    if sql:
        _offline(session, command.upgrade, revision)
        return
    script = script_directory(session)
    with session.connect() as connection:
        before = database_heads(connection, session)
        _require_known(session, script, before)
        steps = upgrade_steps(script, revision, before)
        name = session.environment.name
        if not steps:
            _nothing_to(session, "upgrade", before)
            return
        guard = None
        if session.environment.protected:
            planned = _shown_plan(session, connection, script, steps, "upgrade", before, revision)
            action = f"Upgrade {name} ({session.environment.masked_url}) to {revision}"
            # plan -> confirmation -> backup -> apply: a declined run writes nothing, and the
            # lock held since before the plan means nothing changes while the operator reads.
            consented = _require_consent(session, planned, allow_destructive)
            session.confirm(action)
            _backup_before(session, requested=backup, mandatory=False)
            guard = statement_guard.for_plan(session, planned, consented=consented)
        else:
            _show_steps(session, f"{name}: {plural(len(steps), 'revision')} to apply", steps)
        try:
            run = _run_with(script, "upgrade", guard)
            _apply(session, connection, steps, run, revision, guard=guard)
        except statement_guard.StatementRefused as refused:
            session.record.details["statement_refused"] = {
                "revision": refused.revision,
                "statement": refused.statement,
                "rules": refused.rules,
            }
            raise
        except DatabaseError as error:
            raise _with_stamp_hint(session, error, before) from None


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
    script = script_directory(session)
    with session.connect() as connection:
        before = database_heads(connection, session)
        _require_known(session, script, before)
        steps = _downgrade_steps(script, revision, before)
        name = session.environment.name
        if not steps:
            _nothing_to(session, "downgrade", before)
            return
        action = f"Downgrade {name} ({session.environment.masked_url}) to {revision}"
        if not session.environment.shared:
            _show_steps(session, f"{name}: {plural(len(steps), 'revision')} to revert", steps)
        else:
            _shown_plan(session, connection, script, steps, "downgrade", before, revision)
            if not backup and session.environment.protected:  # refused before anyone is asked
                _backup_before(session, requested=False, mandatory=True)
        # On stdout, next to the question: stderr keeps the one line that says how it ended.
        session.console.line("WARNING: a downgrade can drop tables and columns and lose their data")
        session.confirm(action)
        if session.environment.shared:  # after the answer: a "no" writes no backup
            _backup_before(session, requested=backup, mandatory=session.environment.protected)
        _apply(session, connection, steps, _run_with(script, "downgrade"), revision)


def _with_stamp_hint(session: Session, error: DatabaseError, before: tuple[str, ...]) -> Exception:
    """An upgrade from base that meets existing tables: the schema came from elsewhere.

    `local.sync` (or `create_all`, or a restored dump) builds the tables without recording a
    revision; the first revision then fails on its first CREATE. Say how to record it.
    """
    if before or "already exists" not in str(error).lower():
        return error
    collection = session.record.task.rpartition(".")[0] or session.environment.name
    return DatabaseError(
        f"{error}; the database has tables but no recorded revision (built by local.sync or "
        f"create_all?): if they match the models, record that with "
        f"`invoke {collection}.stamp --rev head` instead of upgrading"
    )


def _nothing_to(session: Session, direction: str, before: tuple[str, ...]) -> None:
    """Say there is nothing to do; the audit records the revision as unchanged."""
    where = revision_ids(before) or "base"
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
    if session.backup_taken is not None:  # one backup of a shared database for all its schemas
        session.record.details["backup"] = str(session.backup_taken)
        return
    from tasks.backup.backups import create_backup

    path = create_backup(session)
    session.record.details["backup"] = str(path)


def _require_consent(session: Session, planned: Plan, allow_destructive: bool) -> bool:
    """Destructive and blocking statements need --allow-destructive or typed consent; --yes
    answers the environment's confirmation, never this one. True when the operator consented
    to everything the plan shows (the statement guard then lets those rules run). Findings a
    revision's written `consent` covers need neither; the audit row records that consent."""
    _record_written_consent(session, planned)
    pending = planned.needing_consent()
    if not pending:
        return False
    rules = ", ".join(sorted({f"{revision}:{finding.rule}" for revision, finding in pending}))
    session.record.details["needs_consent"] = rules
    if allow_destructive:
        _record_consent(session, "--allow-destructive")
        return True
    what = f"{plural(len(pending), 'destructive or blocking statement')} pending ({rules})"
    if not session.can_prompt():
        raise Refused(f"{what}: pass --allow-destructive to apply them; nothing changed")
    session.console.line(summary(planned))  # what is asked about, right above the question
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


def _record_consent(session: Session, how: str) -> None:
    """Who consented and how, in the audit row's arguments (the flag alone is not the story:
    an operator who typed `allow-destructive` consented as much as one who passed the flag)."""
    session.record.arguments["consent"] = how
    session.record.details["consent"] = how


def stamp(session: Session, revision: str, *, sql: bool = False) -> None:
    """Record `revision` as applied without running anything, after confirmation."""
    from alembic import command

    script = script_directory(session)
    validate_revision(script, revision)
    if sql:
        _offline(session, command.stamp, revision)
        return
    with session.connect() as connection:
        before = database_heads(connection, session)
        name = session.environment.name
        session.console.line(f"{name}: at {revision_ids(before) or 'base'}, stamping {revision}")
        operation: Callable[..., Any] = command.stamp
        unknown = _unknown(script, before)
        if unknown:
            # Alembic cannot move from a revision it does not know; purge replaces it outright.
            session.console.line(
                f"WARNING: {revision_ids(unknown)} is unknown to the scripts and will be replaced"
            )
            operation = functools.partial(command.stamp, purge=True)
        session.confirm(f"Stamp {name} ({session.environment.masked_url}) as {revision}")
        _apply(session, connection, [], operation, revision, stamping=True)


def revision(
    session: Session,
    message: str,
    *,
    autogenerate: bool = False,
    options: RevisionOptions | None = None,
) -> Path | None:
    """Write a new revision file; with autogenerate, from the models' differences.

    Refuses unless the database is at the head it builds on: autogenerate against a lagging
    database writes the pending revisions' changes a second time. `options` carries Alembic's
    own flags (--head, --splice, --branch-label, --depends-on, --rev-id, --empty); an empty
    revision needs no database at all. Whatever the flags, the written file is proved the same
    way: the message is data, every name resolves, and its SQL renders.
    """
    if not message.strip():
        raise UsageError("a revision needs a message: -m 'what it changes'")
    options = options or RevisionOptions()
    if options.empty and autogenerate:
        raise UsageError("--empty and --autogenerate contradict each other: choose one")
    script = script_directory(session)
    kwargs = _validated_revision_options(script, options)
    if not options.customised():
        script_heads = tuple(script.get_heads())
        if len(script_heads) > 1:
            raise UsageError(
                f"several heads {revision_ids(script_heads)}: merge them first "
                f"({_merge_command(session)}), or name one with --head"
            )
    if options.empty:
        config = alembic_config(session.settings, stdout=io.StringIO())
        created = _write_revision(session, script, config, message, **kwargs)
        return _report_created(session, created, message, [])
    base = kwargs["head"]
    wanted = {
        item.revision
        for item in pending_plan(lambda: list(script.get_revisions(base)), base)
        if item is not None
    }
    with session.connect() as connection:
        current_heads = database_heads(connection, session)
        connection.rollback()
        _require_known(session, script, current_heads)
        at_base = (
            wanted <= set(current_heads)
            if options.customised()
            else (set(current_heads) == set(script.get_heads()))
        )
        if not at_base:
            raise Refused(
                f"{session.environment.name} database is at "
                f"{revision_ids(current_heads) or 'base'}, "
                f"not at {base} ({revision_ids(wanted) or 'base'}); upgrade it first"
            )
        handover = _handover(session, connection)
        handover.write_empty_revision = not autogenerate
        config = alembic_config(session.settings, handover, stdout=io.StringIO())
        config.attributes["safe_revisions"] = _safe_revisions_enabled(session)
        created = _write_revision(
            session, script, config, message, autogenerate=autogenerate, **kwargs
        )
        connection.rollback()
    return _report_created(session, created, message, handover.revision_directives)


def _validated_revision_options(script: ScriptDirectory, options: RevisionOptions) -> dict:
    """Alembic's keyword arguments, each checked against the scripts before anything is written."""
    kwargs = options.alembic_kwargs()
    for dependency in kwargs["depends_on"] or ():
        validate_revision(script, dependency)
    for label in kwargs["branch_label"] or ():
        _validate_branch_label(script, label)
    if kwargs["rev_id"]:
        validate_new_rev_id(script, kwargs["rev_id"])
    return kwargs


def _write_revision(
    session: Session, script: ScriptDirectory, config: Config, message: str, **kwargs: Any
) -> Any:
    """Alembic's `revision` command; a file it wrote but cannot load is removed again."""
    from alembic import command

    _skip_missing_hook_modules(session, config)
    written_before = _revision_files(script)
    try:
        # Alembic prints "Running post write hook ..." on sys.stdout whatever `quiet` says.
        with contextlib.redirect_stdout(io.StringIO()):
            return run_alembic(session, command.revision, config, message=message, **kwargs)
    except MigrationsError as error:  # Alembic loads what it wrote: a broken file fails here
        _remove_unloadable(session, _revision_files(script) - written_before, message, error)
        raise


def _report_created(
    session: Session, created: Any, message: str, directives: list[Any]
) -> Path | None:
    """The new file, proved (message as data, names resolve, SQL renders), then reported."""
    scripts = created if isinstance(created, list) else [created]
    scripts = [item for item in scripts if item is not None]
    if not scripts:
        session.console.line("no changes between the models and the database: no revision written")
        return None
    path = Path(scripts[0].path)
    _require_message_as_data(path, message)
    session.record.details["revision_file"] = str(path)
    _prove_revision(session, scripts[0])
    session.console.line(f"created {display_path(session, path)}")
    _report_operations(session, directives)
    return path


def _safe_revisions_enabled(session: Session) -> bool:
    """`migrations.safe_revisions`: lock-safe autogenerate on PostgreSQL (tasks/safe_revisions)."""
    from tasks.migrate.safe_revisions import enabled

    return enabled(session.settings.extra)


def _remove_unloadable(
    session: Session, written: set[Path], message: str, error: MigrationsError
) -> None:
    """A revision Alembic wrote but cannot load (a type's module that does not import, a
    template that broke the file) would fail every later task: it is removed, and said so."""
    for path in sorted(written):
        _require_message_as_data(path, message)
    if not written:
        return
    for path in written:
        path.unlink(missing_ok=True)
    shown = ", ".join(display_path(session, path) for path in sorted(written))
    raise ConfigError(f"the new revision could not be loaded ({error}); {shown} was removed")


def _skip_missing_hook_modules(session: Session, config: Config) -> None:
    """A post-write hook whose module is not installed is skipped with a warning.

    Alembic raises after the file is written, leaving a revision the task never reported;
    a formatter missing from a machine (ruff comes with requirements-dev.txt) is not worth that.
    """
    import importlib.util

    section = "post_write_hooks"
    ini = config.file_config
    if not ini.has_section(section):
        return
    names = [name.strip() for name in ini.get(section, "hooks", fallback="").split(",")]
    kept = []
    for name in filter(None, names):
        module = ini.get(section, f"{name}.module", fallback="")
        if ini.get(section, f"{name}.type", fallback="") == "module" and module:
            try:
                missing = importlib.util.find_spec(module) is None
            except (ImportError, ValueError):
                missing = True
            if missing:
                session.console.warning(
                    f"post-write hook {name} skipped: module {module!r} is not installed"
                )
                continue
        kept.append(name)
    ini.set(section, "hooks", ", ".join(kept))


def _prove_revision(session: Session, written: Any) -> None:
    """A new revision must run: every name it uses resolves, and it renders SQL offline.

    Autogenerate renders a custom type as `myapp.types.EncryptedString(...)` and imports
    nothing, so the file fails only later, in `upgrade`, with a line-less NameError. A file that
    fails either proof is removed, and the error says what to fix.
    """
    from alembic import command

    path = Path(written.path)
    shown = display_path(session, path)
    source = path.read_text(encoding="utf-8")
    missing = unresolved_names(source, str(path))
    if missing:
        path.unlink(missing_ok=True)
        name, usage = missing[0]
        raise ConfigError(
            f"the new revision uses {usage} without importing {name!r}, so it could not run; "
            f"{shown} was removed: import the type's module in script.py.mako, or render it "
            "with user_module_prefix or render_item in env.py"
        )
    if session._environment is None and not url_is_set(
        session.settings, session.record.environment
    ):
        return  # an empty revision written without a database: nothing to render it for
    down = written.down_revision
    start = down if isinstance(down, str) else ",".join(down or ()) or "base"
    config = alembic_config(
        session.settings,
        _handover(session, None),
        stdout=io.StringIO(),
        sql_output=io.StringIO(),
    )
    try:
        if session.environment.dialect == "sqlite":
            _rehearse_revision(session, written.revision)
        else:
            run_alembic(session, command.upgrade, config, f"{start}:{written.revision}", sql=True)
    except Exception as error:
        path.unlink(missing_ok=True)
        how = "run on a copy of" if session.environment.dialect == "sqlite" else "render SQL for"
        raise ConfigError(
            f"the new revision does not {how} {session.environment.dialect} "
            f"({' '.join(str(error).split())[:300]}); {shown} was removed"
        ) from None


def _rehearse_revision(session: Session, revision_id: str) -> None:
    """SQLite: batch mode reflects the tables it rebuilds, which offline mode cannot; run the
    new revision on a copy of the database (at head, so only it runs) instead."""
    import tempfile

    from tasks.plan.steps import rehearse

    with tempfile.TemporaryDirectory(prefix="migrations-revision-") as directory:
        rehearse(session, "upgrade", revision_id, f"{directory}/copy.sqlite3")


def unresolved_names(source: str, filename: str) -> list[tuple[str, str]]:
    """Names a module uses but neither defines, imports nor gets from builtins, with the first
    expression using each (`myapp.types.EncryptedString(length=1000)`).

    Python's own symbol tables answer this exactly, without running the file: a name a function
    reads but does not bind is global there, and must then be bound at module level.
    """
    import builtins
    import re
    import symtable

    try:
        module = symtable.symtable(source, filename, "exec")
    except SyntaxError as error:
        return [("(syntax)", f"invalid syntax at line {error.lineno}")]
    defined = {
        symbol.get_name()
        for symbol in module.get_symbols()
        if symbol.is_assigned() or symbol.is_imported() or symbol.is_namespace()
    }
    known = defined | set(dir(builtins)) | {"__file__", "__name__", "__doc__"}
    used: list[str] = []
    tables = [module]
    while tables:
        table = tables.pop()
        tables.extend(table.get_children())
        for symbol in table.get_symbols():
            global_here = table is module or symbol.is_global()
            if symbol.is_referenced() and global_here and symbol.get_name() not in known:
                used.append(symbol.get_name())
    found: list[tuple[str, str]] = []
    for name in dict.fromkeys(used):
        match = re.search(rf"\b{re.escape(name)}(?:\.\w+)*(?:\([^()\n]*\))?", source)
        found.append((name, f"`{match.group(0)}`" if match else f"`{name}`"))
    return found


@dataclass(frozen=True)
class RevisionOptions:
    """Alembic's `revision` flags beyond -m and --autogenerate (issue 12.1)."""

    head: str = "head"
    splice: bool = False
    branch_label: str = ""
    depends_on: str = ""
    rev_id: str = ""
    empty: bool = False

    def customised(self) -> bool:
        return self != RevisionOptions()

    def alembic_kwargs(self) -> dict[str, Any]:
        depends = [item.strip() for item in self.depends_on.split(",") if item.strip()]
        labels = [item.strip() for item in self.branch_label.split(",") if item.strip()]
        return {
            "head": self.head.strip() or "head",
            "splice": self.splice,
            "branch_label": labels or None,
            "depends_on": depends or None,
            "rev_id": self.rev_id.strip() or None,
        }


_REV_ID = re.compile(r"[0-9A-Za-z_]+")
_BRANCH_LABEL = re.compile(r"[A-Za-z_][0-9A-Za-z_]*")
_RESERVED_LABELS = frozenset({"head", "heads", "base"})


def validate_new_rev_id(script: ScriptDirectory, rev_id: str) -> None:
    """A revision id that Alembic's relative syntax and file names can both carry, unused."""
    if not _REV_ID.fullmatch(rev_id):
        raise UsageError(f"--rev-id {rev_id!r}: use letters, digits and underscores only")
    if rev_id in _RESERVED_LABELS:
        raise UsageError(f"--rev-id {rev_id!r}: head, heads and base are Alembic's own names")
    if _known(script, rev_id):
        raise UsageError(f"--rev-id {rev_id!r}: a revision with that id exists already")


def _validate_branch_label(script: ScriptDirectory, label: str) -> None:
    if not _BRANCH_LABEL.fullmatch(label) or label in _RESERVED_LABELS:
        raise UsageError(
            f"--branch-label {label!r}: a name of letters, digits and underscores "
            "(not head, heads or base)"
        )
    if _known(script, label):
        raise UsageError(f"--branch-label {label!r}: that name is taken already")


# --- helpers --------------------------------------------------------------------------------


def _revision_files(script: ScriptDirectory) -> set[Path]:
    """The revision files on disk, to tell which one a failed `revision` call left behind."""
    folders = {script.versions, *(script.version_locations or [])}
    return {path for folder in folders for path in Path(folder).glob("*.py")}


def _require_message_as_data(path: Path, message: str) -> None:
    """Remove a just-written revision whose message is not plain data in its docstring.

    Every task imports every revision file: a message that ended the docstring (three double
    quotes) broke them all with a SyntaxError, and a crafted one ran code in each task,
    `prod.current` included.
    The project's script.py.mako escapes the message; this check also holds a team's own
    template to it, and fails closed: a file it cannot read back the message from is deleted.
    """
    import ast

    try:
        docstring = ast.get_docstring(ast.parse(path.read_bytes(), str(path)), clean=False)
    except (SyntaxError, ValueError, OSError):
        docstring = None
    if docstring is None or message not in docstring:
        path.unlink(missing_ok=True)
        raise UsageError(
            "the revision template does not keep this message as plain text in the docstring "
            "(quotes, backslashes or line breaks break the file); no revision written"
        )


def script_directory(session: Session) -> ScriptDirectory:
    """The scripts of `migrations.alembic_ini`; an ini Alembic cannot use is exit 2, one line."""
    from alembic.script import ScriptDirectory
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    if session._script is not None:  # read once per run; a fleet hands one to every target
        return session._script
    try:
        session._script = ScriptDirectory.from_config(alembic_config(session.settings))
        return session._script
    except (CommandError, RevisionError) as error:
        ini = session.settings.alembic_ini.name
        raise ConfigError(f"{ini} (migrations.alembic_ini): {redact(_first_line(error))}") from None


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


def database_heads(connection: Connection, session: Session) -> tuple[str, ...]:
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


def upgrade_steps(
    script: ScriptDirectory, revision: str, heads: tuple[str, ...]
) -> list[MigrationStep]:
    """What `alembic upgrade` would run (Alembic's own planner, not a re-implementation)."""
    return pending_plan(lambda: script._upgrade_revs(revision, heads), revision)


def _downgrade_steps(
    script: ScriptDirectory, revision: str, heads: tuple[str, ...]
) -> list[MigrationStep]:
    if revision.startswith("-") and len(heads) > 1:
        # Alembic would revert whichever head it lists first (and warns that it will refuse).
        raise UsageError(
            f"revision {revision!r} is ambiguous: the database is at {len(heads)} heads "
            f"({revision_ids(heads)}); name the revision to go down to"
        )
    return pending_plan(lambda: script._downgrade_revs(revision, heads), revision)


# Longer than any id, label or range a person types: refused before Alembic parses it.
MAX_REVISION_ARGUMENT = 256


def _require_short(revision: str) -> None:
    if len(revision) > MAX_REVISION_ARGUMENT:  # an id, a label, heads, a:b, -1, base@+2 ...
        raise UsageError(
            f"a revision argument of {len(revision)} characters: ids, labels and relative steps "
            f"are at most {MAX_REVISION_ARGUMENT}"
        )


def pending_plan(planner: Callable[[], list[MigrationStep]], revision: str) -> list[MigrationStep]:
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    _require_short(revision)
    try:
        return planner()
    except (CommandError, RevisionError) as error:
        raise UsageError(f"revision {revision!r}: {_first_line(error)}") from None
    except AssertionError:  # Alembic's RevisionMap asserts on a relative step past the graph
        raise UsageError(
            f"revision {revision!r}: no such revision (a relative step past base or head?)"
        ) from None


def validate_revision(script: ScriptDirectory, revision: str) -> None:
    pending_plan(lambda: list(script.get_revisions(revision)), revision)


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
    guard: StatementGuard | None = None,
) -> None:
    """Run `operation`, reporting each revision as it completes and naming the one that fails.

    Progress is a ticking live line on a terminal and one plain line per revision elsewhere;
    each revision's duration also goes to the run log. With a statement `guard`, every
    statement sent on `connection` while Alembic runs is judged before it runs.
    """
    from tasks.core.console import Progress
    from tasks.guard.lock import verify_lock

    applied: list[str] = []
    durations: list[dict[str, Any]] = []
    session.record.details["revisions"] = durations
    names = [_step_name(step) for step in steps]
    verb = "applying" if not steps or steps[0].is_upgrade else "reverting"

    residue = _ResidueWatch.start(session, connection)

    with Progress(session.console, len(steps), verb) as progress:

        def on_applied(revision_id: str, doc: str, is_upgrade: bool) -> None:
            # Inside the revision's transaction, just before Alembic commits it: raising here
            # rolls the revision back (see _verified for the check before it starts).
            verify_lock(f"before revision {revision_id} committed")
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
            with statement_guard.guarding(guard, connection):
                run_alembic(session, operation, config, revision)
        except DatabaseError as error:
            if getattr(error, "in_env_py", False):
                raise DatabaseError(f"{_env_py(session)} failed: {error}{ENV_PY_HINT}") from None
            failed = _failed_step(steps, applied)
            if failed:
                advice = residue.explain(failed)
                raise DatabaseError(f"revision {failed} failed: {error}{advice}") from None
            raise
        except KeyboardInterrupt as stop:  # Ctrl-C, SIGTERM: on MySQL the DDL stays all the same
            failed = _failed_step(steps, applied)
            if failed:
                stop.residue = residue.explain(failed)  # type: ignore[attr-defined]
            raise
        finally:
            after = database_heads(connection, session)
            session.record.revision_after = list(after)
    _verify_reached(session, steps, after)
    session.console.line(f"{session.environment.name}: now at {revision_ids(after) or 'base'}")


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
        at = revision_ids(database_heads(self.connection, self.session)) or "base"
        collection = self.session.record.task.rsplit(".", 1)[0]
        return "; " + ddl_residue.recovery_advice(
            residue, environment_task=collection, failed=failed, at=at
        )


def _run_with(
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
                return _verified(script._upgrade_revs(revision, heads), guard)
            return _verified(script._downgrade_revs(revision, heads), guard)

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
        yield step


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
            f"{session.environment.name}: expected to reach {revision_ids(expected) or 'base'}, "
            f"database is at {revision_ids(after) or 'base'}"
        )


def _failed_step(steps: list[MigrationStep], applied: list[str]) -> str | None:
    for step in steps:
        revision_id = step.revision.revision  # type: ignore[attr-defined]
        if revision_id not in applied:
            return revision_id
    return None


def _offline(session: Session, operation: Callable[..., Any], revision: str) -> None:
    """Print the SQL Alembic would run; no connection is opened, and no URL is needed."""
    from tasks.migrate.verbs import offline_session

    _require_short(revision)
    _require_offline_range(revision)
    session = offline_session(session)
    config = alembic_config(
        session.settings,
        _handover(session, None),
        stdout=_StdoutProxy(session),
        sql_output=_StdoutProxy(session),
    )
    run_alembic(session, operation, config, revision, sql=True)


def _require_offline_range(revision: str) -> None:
    """--sql takes TARGET or FROM:TO. Alembic splits on every colon and unpacks two, so
    `a:b:c` was a ValueError reported as an unexpected failure (exit 1) instead of bad input."""
    parts = revision.split(":")
    if len(parts) > 2 or (len(parts) == 2 and not all(part.strip() for part in parts)):
        raise UsageError(f"--rev {revision!r}: --sql takes a revision or one FROM:TO range")


def run_alembic(session: Session, operation: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run an Alembic command; its errors become our typed, masked one-liners."""
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    try:
        with without_ini_logging():
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
        converted = _as_database_error(session, error)
        converted.in_env_py = _raised_in_env_py(error)  # type: ignore[attr-defined]
        raise converted from None


# What the tasks give env.py, for the one line that says an env.py could not be driven.
ENV_PY_HINT = (
    " (the tasks hand env.py the connection in config.attributes['connection'] "
    "and the URL in sqlalchemy.url)"
)


def _raised_in_env_py(error: BaseException) -> bool:
    """Whether `error` came from env.py itself rather than from a revision it ran.

    A revision module (it defines `down_revision`) is on the traceback when a revision fails,
    wherever its file lives (site-packages for an installed application's history); when env.py
    is and no revision is, the revision never ran and blaming it would send people to the wrong
    file.
    """
    from pathlib import PurePath

    in_env_py = False
    traceback_ = error.__traceback__
    while traceback_ is not None:
        frame = traceback_.tb_frame
        if "down_revision" in frame.f_globals and "revision" in frame.f_globals:
            return False
        in_env_py = in_env_py or PurePath(frame.f_code.co_filename).name == "env.py"
        traceback_ = traceback_.tb_next
    return in_env_py


def _env_py(session: Session) -> str:
    """env.py's path as people find it: relative to the project when inside it."""
    from alembic.script import ScriptDirectory

    try:
        script = ScriptDirectory.from_config(alembic_config(session.settings))
    except Exception:
        return "env.py"
    return display_path(session, Path(script.env_py_location))


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

    from tasks.core.errors import MigrationsError

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
            "THIS REVISION DROPS " + "; ".join(drops) + ". If a model was not imported by "
            f"migrations.metadata ({session.settings.metadata}), delete the file instead of "
            "applying it."
        )


def display_path(session: Session, path: Path) -> str:
    """Relative to the project when inside it; the scripts may live elsewhere (alembic_ini)."""
    try:
        return str(path.resolve().relative_to(session.settings.root))
    except ValueError:
        return str(path)


def _merge_command(session: Session) -> str:
    """The task that merges heads in this collection (dev: `invoke dev.merge -m MESSAGE`)."""
    collection = session.record.task.rsplit(".", 1)[0]
    if collection not in {"local", "dev"}:
        collection = "dev"
    return f"invoke {collection}.merge -m MESSAGE"


def revision_ids(revisions: Any) -> str:
    return ", ".join(sorted(revisions))


def _doc(script: ScriptDirectory, revision: str) -> str:
    if not _known(script, revision):
        return "(unknown to the scripts in alembic/versions)"
    found = script.get_revision(revision)
    return f"- {found.doc}" if found is not None and found.doc else ""


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
