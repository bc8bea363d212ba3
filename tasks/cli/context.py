"""Where Invoke meets the guarded runner: a task's run becomes an exit code.

`run_task` names the environment of the task's collection, runs the operation through
`tasks.guard.runner.GuardedRun` (settings, run log, ownership, scope, lock, audit) and turns
a failed outcome into one line on stderr and its documented exit code; `run_command` does the
same for a command that guards each of its targets itself (a fleet). Nothing else calls `Exit`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from invoke import Context, Exit

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
) -> None:
    """Run `operation` for `collection.task` under its declared guard (`runner.GUARDS`) and
    exit with its documented code; `offline` and `read_only` are the flags that lower it."""
    spec = task_spec(
        collection,
        task,
        assume_yes=assume_yes,
        lock_timeout=lock_timeout,
        offline=offline,
        read_only=read_only,
    )
    # Collections without an environment of their own (`ci`) log under their own name.
    environment = COLLECTIONS.get(collection, collection)
    record = RunRecord(environment=environment, task=spec.name, arguments=arguments)
    outcome = GuardedRun(spec, record).execute(c.config.migrations, operation)
    if not outcome.ok:
        raise Exit(outcome.message, code=outcome.exit_code)


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
