"""Where Invoke meets the guarded runner: a task's run becomes an exit code.

`run_task` names the environment of the task's collection, runs the operation through
`tasks.runner.GuardedRun` (settings, run log, ownership, lock, audit) and turns a failed
outcome into one line on stderr and its documented exit code. Nothing else calls `Exit`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from invoke import Context, Exit

from tasks.run_log import RunRecord
from tasks.runner import GuardedRun, TaskSpec
from tasks.session import Session
from tasks.settings import COLLECTIONS, DEFAULTS, PROJECT_ROOT, Settings, settings_from_mapping


def run_task(
    c: Context,
    collection: str,
    task: str,
    arguments: dict[str, Any],
    operation: Callable[[Session], Any],
    *,
    changes_database: bool,
    creates_revision: bool = False,
    assume_yes: bool = False,
    lock_timeout: float | None = None,
    needs_database: bool = True,
) -> None:
    """Run `operation` for `collection.task` and exit with its documented code."""
    spec = TaskSpec(
        collection,
        task,
        changes_database,
        creates_revision,
        assume_yes,
        lock_timeout,
        needs_database,
    )
    # Collections without an environment of their own (`ci`) log under their own name.
    environment = COLLECTIONS.get(collection, collection)
    record = RunRecord(environment=environment, task=spec.name, arguments=arguments)
    outcome = GuardedRun(spec, record).execute(c.config.migrations, operation)
    if not outcome.ok:
        raise Exit(outcome.message, code=outcome.exit_code)


def run_command(c: Context, name: str, command: Callable[[Settings], int]) -> None:
    """Run a command that guards each of its own targets (a fleet) and exit with its code.

    The command gets the validated settings and returns an exit code; its own errors (a bad
    fleet configuration, an unknown revision) become one line on stderr like any task's.
    """
    from tasks.errors import MigrationsError
    from tasks.runner import one_line

    try:
        code = command(settings_from_mapping(c.config.migrations))
    except MigrationsError as error:
        raise Exit(one_line(f"{name}: {error}"), code=int(error.exit_code)) from None
    except KeyboardInterrupt:
        raise Exit(f"{name}: interrupted", code=130) from None
    if code:
        raise Exit(code=code)


def load_project_settings(root: Path = PROJECT_ROOT) -> Settings:
    """Settings for code outside Invoke (plain `alembic`), read the way Invoke reads them."""
    from invoke import Config  # Invoke's own loader: the same files and variables, same order

    config = Config(defaults={"migrations": DEFAULTS}, project_location=str(root))
    config.load_project()
    config.load_shell_env()
    return settings_from_mapping(config.migrations, root)
