"""Where Invoke meets the guarded runner: a task's run becomes an exit code.

`run_task` names the environment of the task's collection, runs the operation through
`tasks.guard.runner.GuardedRun` (settings, run log, ownership, scope, lock, audit) and turns
a failed outcome into one line on stderr and its documented exit code; `run_command` does the
same for a command that guards each of its targets itself (a fleet). Nothing else calls `Exit`.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from invoke import Context, Exit

from tasks.core.console import Console
from tasks.core.errors import MigrationsError
from tasks.core.run_log import RunRecord
from tasks.core.session import Session
from tasks.core.settings import COLLECTIONS, Settings, settings_from_mapping
from tasks.guard.interrupts import stop_signals
from tasks.guard.runner import GuardedRun, TaskSpec, guard_for, one_line, warnings_into


def run_task(
    c: Context,
    collection: str,
    task: str,
    arguments: dict[str, Any],
    operation: Callable[[Session], Any],
    *,
    assume_yes: bool = False,
    lock_timeout: float | None = None,
    offline: bool = False,
    read_only: bool = False,
    as_json: bool = False,
) -> None:
    """Run `operation` for `collection.task` under its declared guard (`runner.GUARDS`) and
    exit with its documented code; `offline` and `read_only` are the flags that lower it.
    `as_json` prints one document of the run instead of its lines (`tasks.core.json_document`);
    the exit code and the one-line error on stderr stay as they are."""
    spec = task_spec(
        collection,
        task,
        assume_yes=assume_yes,
        lock_timeout=lock_timeout,
        offline=offline,
        read_only=read_only,
    )
    if spec.needs_database and not spec.changes_database and spec.name != "local.sync":
        operation = _never_creating(operation)
    # Collections without an environment of their own (`ci`) log under their own name.
    environment = COLLECTIONS.get(collection, collection)
    _check_variables(c, spec.name)
    record = RunRecord(environment=environment, task=spec.name, arguments=arguments)
    record.operator = _operator_from_dotenv(c, environment)
    captured = io.StringIO() if as_json else None
    console = Console(stdout=captured) if captured is not None else None
    outcome = GuardedRun(spec, record, console=console).execute(c.config.migrations, operation)
    if captured is not None:
        _print_document(spec.name, record, outcome, captured.getvalue())
    if not outcome.ok:
        raise Exit(outcome.message, code=outcome.exit_code)


def _print_document(name: str, record: RunRecord, outcome: Any, output: str) -> None:
    import sys

    from tasks.core.json_document import document

    text = document(
        name,
        environment=record.environment,
        database=record.database,
        ok=outcome.ok,
        exit_code=outcome.exit_code,
        error=outcome.error,
        started_at=record.started_at,
        revision_before=record.revision_before,
        revision_after=record.revision_after,
        details=record.details,
        result=outcome.value,
        output=output,
    )
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `| head`: the document is dropped, the run's code stands
        pass


def _check_variables(c: Context, name: str) -> None:
    """A misspelt `INVOKE_MIGRATIONS_*` variable is exit 2 before anything runs: Invoke would
    ignore it, and a guard it meant to set would silently stay as it was."""
    import os

    from tasks.core.settings import check_setting_variables

    try:
        check_setting_variables(c.config.migrations, os.environ)
    except MigrationsError as error:
        raise Exit(f"{name}: {error}", code=int(error.exit_code)) from None


def _operator_from_dotenv(c: Context, environment: str) -> str | None:
    """`MIGRATIONS_OPERATOR` from `.env.<environment>` or `.env` when the process has none (the
    runner falls back to git's user.email); settings that do not load are the runner's error."""
    import os

    from tasks.core.environments import variable_value

    if os.environ.get("MIGRATIONS_OPERATOR", "").strip():
        return None
    try:
        settings = settings_from_mapping(c.config.migrations)
        value = variable_value(settings, environment, "MIGRATIONS_OPERATOR")
    except MigrationsError:
        return None
    return (value or "").strip() or None


def _never_creating(operation: Callable[[Session], Any]) -> Callable[[Session], Any]:
    """A read on a SQLite file that does not exist is bad input (a mistyped path), not an
    empty database: connecting would create the file and report "at base"."""

    def reading(session: Session) -> Any:
        from pathlib import Path

        from tasks.core.errors import UsageError

        environment = session.environment
        database = environment.url.database or ""
        in_memory = not database or database == ":memory:" or database.startswith("file:")
        if environment.dialect == "sqlite" and not in_memory and not Path(database).exists():
            raise UsageError(
                f"{environment.name}: the SQLite file {database} does not exist "
                f"({environment.url_variable}; a read never creates it)"
            )
        return operation(session)

    return reading


def task_spec(
    collection: str,
    task: str,
    *,
    assume_yes: bool = False,
    lock_timeout: float | None = None,
    offline: bool = False,
    read_only: bool = False,
) -> TaskSpec:
    """The runner's spec for one run: the declared guard, lowered by `--sql`-like flags."""
    guard = guard_for(collection, task)
    if offline:
        guard = guard.offline()
    if read_only:
        guard = guard.read_only()
    return TaskSpec(
        collection,
        task,
        guard.changes_database,
        guard.creates_revision,
        assume_yes,
        lock_timeout,
        guard.needs_database,
    )


def run_command(c: Context, name: str, command: Callable[[Settings], int]) -> None:
    """Run a command that guards each of its own targets (a fleet) and exit with its code.

    The command gets the validated settings and returns an exit code; its own errors (a bad
    fleet configuration, an unknown revision) become one line on stderr like any task's. Stop
    signals are set up here, once, in the main thread: the targets run in worker threads, which
    finish what they started (each revision commits or rolls back) when the command stops.
    """
    _check_variables(c, name)
    record = RunRecord(environment=name.split(".")[0], task=name, arguments={})
    try:
        settings = settings_from_mapping(c.config.migrations)
        with stop_signals(), warnings_into(record):
            code = command(settings)
        if record.details.get("warnings"):  # the targets' warnings: to the run log, not stderr
            _log_event(settings, "warnings", task=name, warnings=record.details["warnings"])
    except MigrationsError as error:
        raise Exit(one_line(f"{name}: {error}"), code=int(error.exit_code)) from None
    except KeyboardInterrupt:
        raise Exit(f"{name}: interrupted", code=130) from None
    if code:
        raise Exit(code=code)


def _log_event(settings: Settings, event: str, **fields: Any) -> None:
    from tasks.core.run_log import RunLog

    try:
        log = RunLog(settings.log_file)
    except MigrationsError:
        return
    try:
        log.event(event, **fields)
    finally:
        log.close()
