"""The guarded runner: one operation on one database, inside every guard the tasks promise.

Settings, run log, ownership, scope, lock, audit, stop signals: `GuardedRun` applies them around
an operation that takes a `Session` and returns a `RunOutcome` instead of exiting, so a loop over
many databases (`tasks.fleet.targets`) gets the same guards as a single task. It never imports
Invoke;
the task layer (`tasks.cli.context`) turns a failed outcome into Invoke's `Exit`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, TextIO

from tasks.core.alembic_config import without_ini_logging
from tasks.core.confirmation import Confirmer
from tasks.core.console import Console
from tasks.core.environments import Environment
from tasks.core.errors import ExitCode, MigrationsError
from tasks.core.redaction import redact
from tasks.core.run_log import RunLog, RunRecord
from tasks.core.session import Session
from tasks.core.settings import Settings, settings_from_mapping
from tasks.guard.interrupts import EXIT_INTERRUPTED, Terminated, stop_requests, stops_first
from tasks.guard.ownership import current_operator, policy_applies, require_owner

if TYPE_CHECKING:
    from tasks.guard.lock import HeldLock


@dataclass(frozen=True)
class TaskSpec:
    """How the shared context treats a task: what it guards and what it records."""

    collection: str
    task: str
    changes_database: bool
    creates_revision: bool = False
    assume_yes: bool = False
    lock_timeout: float | None = None
    needs_database: bool = True

    @property
    def name(self) -> str:
        return f"{self.collection}.{self.task}"


@dataclass(frozen=True)
class Guard:
    """A task's guard policy, declared once in `GUARDS` instead of at every call site.

    `changes_database` takes the migration lock, writes the audit row on shared databases and
    applies the ownership policy there; `creates_revision` applies the ownership policy
    everywhere; `needs_database` resolves the URL before anything runs (a missing one fails).
    """

    changes_database: bool = False
    creates_revision: bool = False
    needs_database: bool = True

    def offline(self) -> Guard:
        """The run touches no database (`--sql` renders offline, `--empty` writes from the
        scripts alone, a flag refused before any connection): it changes nothing, needs none."""
        return replace(self, changes_database=False, needs_database=False)

    def read_only(self) -> Guard:
        """The run only reads its database (`local.sync --check`)."""
        return replace(self, changes_database=False)


# Anything undeclared gets every guard: a policy nobody wrote down is treated as the strictest.
STRICTEST = Guard(changes_database=True, creates_revision=True, needs_database=True)

# Keyed by task name (every environment collection's task of that name) or by
# `collection.task` (a task only that collection has); the qualified name wins.
GUARDS: dict[str, Guard] = {
    # Reading the database.
    "current": Guard(),
    "plan": Guard(),
    "check": Guard(),
    "preflight": Guard(),
    "audit": Guard(),
    "local.backup": Guard(),
    # Reading the scripts; the database only when a URL is set.
    "history": Guard(needs_database=False),
    "heads": Guard(needs_database=False),
    "show": Guard(needs_database=False),
    "branches": Guard(needs_database=False),
    "edit": Guard(needs_database=False),
    "checksums": Guard(needs_database=False),
    "ci.check": Guard(needs_database=False),
    # Changing the database (`--sql`: offline; `local.sync --check`: read-only).
    "upgrade": Guard(changes_database=True),
    "downgrade": Guard(changes_database=True),
    "stamp": Guard(changes_database=True),
    "repair": Guard(changes_database=True),
    "local.sync": Guard(changes_database=True),
    "local.restore": Guard(changes_database=True),
    "local.reset": Guard(changes_database=True),
    # Writing revision files (`revision --empty`: offline).
    "revision": Guard(creates_revision=True),
    "merge": Guard(creates_revision=True, needs_database=False),
    # Replacing revision files by a baseline built and proven on throwaway databases.
    "squash": Guard(creates_revision=True, needs_database=False),
}


# Tasks that may ask a person: they take the lock themselves (`Session.hold_lock`) after the
# answer, and re-read the database under it; every change they make goes through that lock.
ASK_BEFORE_LOCK = frozenset({"upgrade", "downgrade", "stamp"})


def guard_for(collection: str, task: str) -> Guard:
    """The declared guard of `collection.task`; the strictest one when none is declared."""
    return GUARDS.get(f"{collection}.{task}") or GUARDS.get(task) or STRICTEST


@dataclass(frozen=True)
class RunOutcome:
    """How a guarded run ended: `ok`, `refused` or `failed`, with its exit code and one line."""

    outcome: str
    exit_code: int
    message: str | None = None  # the one line for stderr, task name first, secrets masked
    error: str | None = None  # the same without the task name (a fleet's per-target line)
    value: Any = None  # what the operation returned
    record: RunRecord | None = None  # the run's record: revisions before and after, details

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class GuardedRun:
    """One run of one task against one database.

    `environment`, `console`, `confirmer` and `session_defaults` let a caller that runs many
    targets (a fleet) hand over a target's database, a quiet console, an answered prompt and
    what it already loaded (models, scripts) instead of resolving them again per target.
    """

    def __init__(
        self,
        spec: TaskSpec,
        record: RunRecord,
        *,
        environment: Environment | None = None,
        console: Console | None = None,
        confirmer: Confirmer | None = None,
        session_defaults: dict[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.record = record
        self.started = time.perf_counter()
        self.log: RunLog | None = None
        self.settings: Settings | None = None
        self.session: Session | None = None
        self.console = console or Console()
        self._given_environment = environment
        self._confirmer = confirmer
        self._session_defaults = session_defaults or {}

    @property
    def environment(self) -> Environment | None:
        """The environment if it was resolved (the audit needs it; `heads` may never)."""
        return self.session._environment if self.session is not None else None

    def execute(self, raw_settings: Any, operation: Callable[[Session], Any]) -> RunOutcome:
        """Run `operation` under the task's guards; never exits, never raises a task's error."""
        # The lock, when taken, is released only after the run is logged and audited: audit
        # rows then follow the order in which runners held the lock, and the next runner never
        # starts before the previous one's row exists.
        with contextlib.ExitStack() as held:
            for guard in _process_guards(self.record):
                held.enter_context(guard)
            return self._execute(raw_settings, operation, held)

    def _execute(
        self, raw_settings: Any, operation: Callable[[Session], Any], held: contextlib.ExitStack
    ) -> RunOutcome:
        try:
            with stops_first():
                session = self._prepare(raw_settings)
                if self.spec.changes_database and self.spec.task in ASK_BEFORE_LOCK:
                    session.lock_taker = lambda: held.enter_context(self._lock())
                elif self.spec.changes_database:
                    held.enter_context(self._lock())
                value = operation(session)
        except MigrationsError as error:
            message = _located(self.record, error, str(error))
            self._finish(error.outcome, message)
            return self._outcome(error.outcome, int(error.exit_code), message)
        except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM/SIGHUP (Terminated)
            what, code = _stopped_by(interrupt)
            self._finish("failed", what)
            return self._outcome("failed", code, what)
        except SystemExit as error:  # code we import (revisions, env.py) called sys.exit
            detail = _located(self.record, error, f"sys.exit({error.code!r}) called", always=True)
            self._finish("failed", detail)
            return self._outcome("failed", int(ExitCode.FAILED), detail)
        except Exception as error:  # a bug or an unforeseen failure: details go to the log
            detail = _located(self.record, error, f"{type(error).__name__}: {error}", always=True)
            self._finish("failed", detail)
            return self._outcome("failed", int(ExitCode.FAILED), f"unexpected error: {detail}")
        else:
            lost = self._finish("ok", None)
            if lost is not None:  # applied, but the database keeps no record of it: say so
                outcome = self._outcome("ok", int(ExitCode.AUDIT_NOT_WRITTEN), lost)
                return replace(outcome, value=value)
            return RunOutcome("ok", 0, value=value, record=self.record)
        finally:
            if self.log is not None:
                self.log.close()

    def _outcome(self, outcome: str, code: int, error: str) -> RunOutcome:
        message = one_line(f"{self.spec.name}: {error}")
        return RunOutcome(outcome, code, message, one_line(error), record=self.record)

    def _prepare(self, raw_settings: Any) -> Session:
        self.settings = (
            raw_settings
            if isinstance(raw_settings, Settings)
            else settings_from_mapping(raw_settings)
        )
        # A fleet names the operator once for all its targets (it runs `git config`).
        self.record.operator = self.record.operator or current_operator()
        try:
            self.log = RunLog(self.settings.log_file)
        except MigrationsError as error:  # refused: still an attempt on a shared database
            self._audit_without_log(str(error))
            raise
        confirmer = self._confirmer or Confirmer(assume_yes=self.spec.assume_yes)
        session = self.session = Session(
            self.settings,
            self.record,
            confirmer,
            self.console,
            _environment=self._given_environment,
            **self._session_defaults,
        )
        if self._given_environment is not None:
            self.record.database = self._given_environment.masked_url
        if self.spec.needs_database:
            session.environment  # noqa: B018 - resolve now: a missing URL fails before anything
            self._note_protection_override(session)
        try:
            self.log.started(self.record)
        except MigrationsError as error:  # the log is unusable (a full disk): no finish line
            self.log.close()
            self.log = None
            self._audit_without_log(str(error))
            raise
        spec = self.spec
        if policy_applies(
            self._shared(),
            changes_database=spec.changes_database,
            creates_revision=spec.creates_revision,
        ):
            require_owner(self.settings.owners, self.record.operator, spec.name)
        self._check_scope(session)
        return session

    def _audit_without_log(self, error: str) -> None:
        """A run refused because its log cannot be written still leaves its audit row in a
        shared database it would have changed (the run log cannot hold the attempt)."""
        from tasks.core.environments import resolve_environment

        assert self.settings is not None
        if not self.spec.changes_database:
            return
        try:
            environment = self._given_environment or resolve_environment(
                self.settings, self.record.environment
            )
        except MigrationsError:
            return  # no database to write it to
        if environment.shared:
            self._audit_in(environment, "refused", error)

    def _shared(self) -> bool:
        """The environment's `shared` flag, read without resolving its URL (`heads` has none);
        a name the configuration does not know is treated as shared."""
        assert self.settings is not None
        if self._given_environment is not None:
            return self._given_environment.shared
        configured = self.settings.environments.get(self.record.environment)
        return configured.shared if configured is not None else True

    def _note_protection_override(self, session: Session) -> None:
        """A protected-by-default environment unprotected by a variable or `-f` file: one
        warning line, and the reason in the run's arguments (log and audit row)."""
        from tasks.core.settings import protection_override

        assert self.settings is not None
        if session.environment.name not in self.settings.environments:
            return  # a fleet's target: its protection is the fleet's own setting
        reason = protection_override(self.settings, session.environment.name)
        if reason is None:
            return
        self.record.arguments["protection_override"] = reason
        self.console.warning(
            f"{session.environment.name} is protected by the project's configuration, but "
            f"{reason} unprotects it: no typed confirmation, no mandatory backup"
        )

    def _lock(self) -> contextlib.AbstractContextManager[HeldLock]:
        from tasks.guard.lock import migration_lock

        assert self.settings is not None and self.session is not None
        # Both sources are validated already: --lock-timeout by its task, the configuration's
        # by settings_from_mapping.
        timeout = self.spec.lock_timeout
        if timeout is None:
            timeout = self.settings.lock_timeout
        # Who, where, what and which process: enough for a waiting operator to find the holder.
        who = self.record.operator or self.record.user
        label = lock_label(who, self.record.host, self.spec.name, os.getpid())
        console = self.console

        def waiting(text: str) -> None:
            console.clear_status()
            console.line(text)

        return migration_lock(
            self.session.environment,
            label=label,
            timeout=timeout,
            connect_timeout=self.settings.connect_timeout,
            on_wait=waiting,
            on_tick=lambda waited: console.status(
                f"waiting for the migration lock: {waited:.0f}/{timeout:g} s"
            ),
        )

    def _finish(self, outcome: str, error: str | None) -> str | None:
        """Audit row, then log line. Returns the one line to exit with when the audit row of a
        run that changed the database could not be written, else None."""
        duration_ms = (time.perf_counter() - self.started) * 1000
        if self.session is not None:  # time at the prompt is the operator's, not the run's
            duration_ms = max(0.0, duration_ms - self.session.confirmer.waited * 1000)
        if outcome == "refused" and self.record.revision_after is None:
            self.record.revision_after = self.record.revision_before  # a refusal changes nothing
        # The audit row first: it is the record that travels with the database, and neither a
        # full local disk nor a terminal gone with SIGHUP must cost it. The run log's line
        # follows; if it cannot be written, one line says so and the run keeps its outcome.
        # A run that found nothing to do changed nothing: no audit row (issue 18.8), the log
        # line still says it ran.
        lost = None
        if self._audited() and not (outcome == "ok" and self.record.details.get("no_op")):
            lost = self._audit(outcome, error, duration_ms)
        self.console.clear_status()  # a live terminal line must not swallow the last words
        if self.log is not None:
            self.log.finished(self.record, outcome=outcome, duration_ms=duration_ms, error=error)
            if self.log.failure is not None:
                self.console.warning(one_line(self.log.failure))
        return lost

    def _audited(self) -> bool:
        """Shared databases keep their own record of every attempt to change them."""
        return (
            self.spec.changes_database and self.environment is not None and self.environment.shared
        )

    def _audit(self, outcome: str, error: str | None, duration_ms: float) -> str | None:
        """Write the run's audit row. When it cannot be written the row goes to the run log
        (`<env>.audit --backlog` writes it later) and, for a run that did what it was asked,
        the line to exit with (AUDIT_NOT_WRITTEN) is returned: never an audit row lost with
        exit 0. A failed or refused run keeps its own code and line."""
        from tasks.guard.audit import audit_row, write_row

        assert self.settings is not None and self.environment is not None
        row = audit_row(
            self.environment,
            self.record,
            outcome=outcome,
            error=redact(error) if error else None,
            duration_ms=duration_ms,
            root=self.settings.root,
        )
        try:
            write_row(self.environment, row, connect_timeout=self.settings.connect_timeout)
        except Exception as audit_error:
            return self._audit_lost(outcome, row, audit_error)
        return None

    def _audit_lost(self, outcome: str, row: dict[str, Any], audit_error: Exception) -> str | None:
        """Keep the row in the run log and say so in one line, without SQL or parameters."""
        import uuid

        from tasks.core.engines import describe_database_error
        from tasks.guard.audit import PENDING_EVENT

        why = describe_database_error(audit_error)
        kept = None
        if self.log is not None:
            kept = self.log.event(
                PENDING_EVENT,
                task=self.spec.name,
                environment=self.record.environment,
                database=self.environment.masked_url if self.environment else None,
                replay_id=uuid.uuid4().hex,
                row=row,
                error=why,
            )
            kept = "kept" if kept is None else None
        from tasks.core import suggestions

        backlog = suggestions.command(self.spec.collection, "audit", "--backlog")
        where = (
            f"kept in the run log for `{backlog}`"
            if kept and backlog
            else "kept in the run log for the environment's audit --backlog"
            if kept
            else "and the run log could not keep it either"
        )
        message = f"could not write the audit row ({why}); {where}"
        if outcome == "ok":
            return f"the run succeeded but {message}"
        if self.log is not None:
            self.log.event("audit failed", task=self.spec.name, error=message)
        return None

    def _check_scope(self, session: Session) -> None:
        """Refuse a run whose database is not its own environment's (tasks.core.environments).

        Before any connection: `DATABASE_URL_LOCAL=$DATABASE_URL_PRODUCTION invoke local.reset`
        never reaches production. A refused attempt to change a shared database is still an
        attempt on it, so it is recorded in that database's audit table, as its own runs are.
        """
        from tasks.core.environments import url_is_set
        from tasks.core.scope import ForeignDatabase, check_scope

        assert self.settings is not None
        if not self.spec.needs_database:
            # Reading tasks (history, show) use the database only when a URL is set: then it is
            # theirs to read, and it must be their own environment's like any other run's.
            name = self.record.environment
            if name not in self.settings.environments or not url_is_set(self.settings, name):
                return  # `ci` has no database of its own
            try:
                session.environment  # noqa: B018
            except MigrationsError:
                return  # a URL it cannot use: the task reads the scripts alone, or says so
        try:
            check_scope(
                self.settings, session.environment, changes_database=self.spec.changes_database
            )
        except ForeignDatabase as refusal:
            # A shared run's own audit row already lands in that database (`_finish`).
            if self.spec.changes_database and not self._audited():
                self._audit_in(refusal.owner, "refused", str(refusal))
            raise

    def _audit_in(self, environment: Environment, outcome: str, error: str) -> None:
        """One audit row in `environment`'s database; failing to write it never changes the
        run's outcome (the run log has the attempt either way)."""
        from tasks.guard.audit import record_run

        assert self.settings is not None
        try:
            record_run(
                environment,
                self.record,
                outcome=outcome,
                error=redact(error),
                duration_ms=(time.perf_counter() - self.started) * 1000,
                root=self.settings.root,
                connect_timeout=self.settings.connect_timeout,
            )
        except Exception as audit_error:
            if self.log is not None:
                message = f"could not write the audit row: {one_line(str(audit_error))}"
                self.log.event("audit failed", task=self.spec.name, error=message)


def _process_guards(record: RunRecord) -> list[Any]:
    """What a run changes for the whole process while it lasts: stop signals, where warnings go,
    logging. Only the main thread may: a fleet's worker threads share the process, so the fleet
    command installs these once around all of its targets."""
    if threading.current_thread() is not threading.main_thread():
        return []
    # SIGTERM and SIGHUP stop the run like Ctrl-C (statement cancelled, rollback, audit row, log
    # line); warnings go to the run log, and a team env.py's fileConfig stays off stderr.
    return [stop_requests(), warnings_into(record), without_ini_logging()]


@contextlib.contextmanager
def warnings_into(record: RunRecord) -> Iterator[None]:
    """Python warnings raised during a task go to its run log entry, not to stderr.

    SQLAlchemy's SAWarnings and Alembic's multi-kilobyte warnings would otherwise break the
    promise of one line on stderr; in the log (`details.warnings`) they stay available, masked.
    """

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        where = f"{PurePath(filename).name}:{lineno}"
        text = " ".join(str(message).split())
        record.details.setdefault("warnings", []).append(f"{category.__name__}: {text} ({where})")

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _stopped_by(interrupt: KeyboardInterrupt) -> tuple[str, int]:
    """What stopped the run, for the log and audit, and the exit code a shell expects."""
    left = getattr(interrupt, "residue", "")  # what a stopped MySQL revision left behind
    if isinstance(interrupt, Terminated):
        return f"{interrupt}{left}", interrupt.exit_code
    return f"interrupted{left}", EXIT_INTERRUPTED


def _located(record: RunRecord, error: BaseException, message: str, *, always: bool = False) -> str:
    """Issue 12.5: the message with `file:line` when the error came from the operator's code
    (models, env.py, revisions); the full traceback kept for the run log, and printed to stderr
    under Invoke's --debug. A one-line error with no underlying exception has no traceback."""
    from tasks.core.locations import debugging, full_traceback, with_location

    underlying = error if always else error.__cause__ or error.__context__
    if underlying is None:
        return message
    text = full_traceback(error)
    record.exception = text
    if debugging():
        print(text, file=sys.stderr, end="", flush=True)
    return with_location(message, error)


# PostgreSQL keeps 63 bytes of a session's application_name, which is how a waiting runner
# learns who holds the lock: the label is made to fit rather than cut.
LOCK_LABEL_LIMIT = 63


def lock_label(who: str, host: str, task: str, pid: int) -> str:
    """`who@host task pid N`, shortened the way that keeps it useful: the host goes first (the
    server also reports the client's address), then the operator's domain."""
    for candidate in (
        f"{who}@{host} {task} pid {pid}",
        f"{who} {task} pid {pid}",
        f"{who.split('@')[0]} {task} pid {pid}",
    ):
        if len(candidate.encode()) <= LOCK_LABEL_LIMIT:
            return candidate
    return f"{task} pid {pid}"[:LOCK_LABEL_LIMIT]


def one_line(message: str) -> str:
    """A message as one masked line: what stderr and per-target summaries show."""
    return " ".join(redact(message).split())
