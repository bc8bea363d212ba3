"""The guarded runner: one operation on one database, inside every guard the tasks promise.

Settings, run log, ownership, lock, audit: `GuardedRun` applies them around an operation that
takes a `Session`, and returns an `RunOutcome` instead of exiting, so a loop over many databases
(`tasks.fleet`) uses the same guards as a single task. It never imports Invoke; the task layer
(`tasks.context`) turns a failed RunOutcome into Invoke's `Exit`.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tasks.confirmation import Confirmer
from tasks.console import Console
from tasks.environments import Environment
from tasks.errors import ExitCode, MigrationsError
from tasks.ownership import current_operator, policy_applies, require_owner
from tasks.redaction import redact
from tasks.run_log import RunLog, RunRecord
from tasks.session import Session
from tasks.settings import Settings, settings_from_mapping


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
    what it already loaded (metadata, scripts) instead of resolving them again per target.
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
        """Run `operation` under the task's guards; never exits, never raises a task error."""
        # The lock, when taken, is released only after the run is logged and audited: audit
        # rows then follow the order in which runners held the lock, and the next runner never
        # starts before the previous one's row exists.
        with contextlib.ExitStack() as held:
            return self._execute(raw_settings, operation, held)

    def _execute(
        self, raw_settings: Any, operation: Callable[[Session], Any], held: contextlib.ExitStack
    ) -> RunOutcome:
        try:
            session = self._prepare(raw_settings)
            if self.spec.changes_database:
                held.enter_context(self._lock())
            value = operation(session)
        except MigrationsError as error:
            self._finish(error.outcome, str(error))
            return self._outcome(error.outcome, int(error.exit_code), str(error))
        except KeyboardInterrupt:
            self._finish("failed", "interrupted")
            return self._outcome("failed", 130, "interrupted")
        except Exception as error:  # a bug or an unforeseen failure: details go to the log
            detail = f"{type(error).__name__}: {error}"
            self.record.details["traceback"] = traceback.format_exc()
            self._finish("failed", detail)
            return self._outcome("failed", int(ExitCode.FAILED), f"unexpected error: {detail}")
        else:
            self._finish("ok", None)
            return RunOutcome("ok", 0, value=value, record=self.record)
        finally:
            if self.log is not None:
                self.log.close()

    def _outcome(self, outcome: str, code: int, error: str) -> RunOutcome:
        line = one_line(error)
        message = one_line(f"{self.spec.name}: {error}")
        return RunOutcome(outcome, code, message, line, record=self.record)

    def _prepare(self, raw_settings: Any) -> Session:
        self.settings = (
            raw_settings
            if isinstance(raw_settings, Settings)
            else settings_from_mapping(raw_settings)
        )
        self.log = RunLog(self.settings.log_file)
        # A fleet names the operator once for all its targets (it runs `git config`).
        self.record.operator = self.record.operator or current_operator()
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
        self.log.started(self.record)
        spec = self.spec
        if policy_applies(
            self._shared(),
            changes_database=spec.changes_database,
            creates_revision=spec.creates_revision,
        ):
            require_owner(self.settings.owners, self.record.operator, spec.name)
        return session

    def _shared(self) -> bool:
        """The environment's `shared` flag, read without resolving its URL (`heads` has none);
        a name the configuration does not know is treated as shared."""
        assert self.settings is not None
        if self._given_environment is not None:
            return self._given_environment.shared
        configured = self.settings.environments.get(self.record.environment)
        return configured.shared if configured is not None else True

    def _lock(self):  # type: ignore[no-untyped-def]
        from tasks.locking import migration_lock

        assert self.settings is not None and self.session is not None
        # Both sources are validated already: --lock-timeout by its task, the configuration's
        # by settings_from_mapping.
        timeout = self.spec.lock_timeout
        if timeout is None:
            timeout = self.settings.lock_timeout
        # Who, where, what and which process: enough for a waiting operator to find the holder.
        who = self.record.operator or self.record.user
        label = f"{who}@{self.record.host} {self.spec.name} pid {os.getpid()}"
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

    def _finish(self, outcome: str, error: str | None) -> None:
        self.console.clear_status()  # a live terminal line must not swallow the last words
        duration_ms = (time.perf_counter() - self.started) * 1000
        if outcome == "refused" and self.record.revision_after is None:
            self.record.revision_after = self.record.revision_before  # a refusal changes nothing
        if self.log is not None:
            self.log.finished(self.record, outcome=outcome, duration_ms=duration_ms, error=error)
        if self._audited():
            self._audit(outcome, error, duration_ms)

    def _audited(self) -> bool:
        """Shared databases keep their own record of every attempt to change them."""
        return (
            self.spec.changes_database and self.environment is not None and self.environment.shared
        )

    def _audit(self, outcome: str, error: str | None, duration_ms: float) -> None:
        from tasks.audit import record_run

        assert self.settings is not None and self.environment is not None
        try:
            record_run(
                self.environment,
                self.record,
                outcome=outcome,
                error=redact(error) if error else None,
                duration_ms=duration_ms,
                root=self.settings.root,
                connect_timeout=self.settings.connect_timeout,
            )
        except Exception as audit_error:  # the run's own outcome matters more than its audit row
            message = f"could not write the audit row: {one_line(str(audit_error))}"
            if self.log is not None:
                self.log.event("audit failed", task=self.spec.name, error=message)
            if outcome == "ok":  # on failure the run's own error is the one line that matters
                self.console.warning(message)


def one_line(message: str) -> str:
    """A message as one masked line: what stderr and per-target summaries show."""
    return " ".join(redact(message).split())
