"""The `ci` collection: checks a pipeline runs on every change to the migrations."""

from __future__ import annotations

from invoke import Context, Task

from tasks.alembic_tasks import flag_task
from tasks.context import run_task


def ci_tasks() -> list[Task]:
    @flag_task
    def check(c: Context) -> None:
        """Heads, real downgrades, stairway and models on ci.dialects, lint (ci.since: trusted)."""
        from tasks import ci_checks

        run_task(
            c,
            "ci",
            "check",
            {},
            ci_checks.run_checks,
            changes_database=False,
            needs_database=False,
        )

    return [check]
