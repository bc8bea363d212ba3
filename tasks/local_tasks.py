"""Tasks only the `local` collection has: the fast schema sync."""

from __future__ import annotations

from invoke import Context, Task, task

from tasks.context import run_task


def local_tasks() -> list[Task]:
    @task(
        help={
            "check": "report differences only; change nothing",
            "backup": "back the database up before applying anything",
        }
    )
    def sync(c: Context, check: bool = False, backup: bool = False) -> None:
        """Bring the local database up to the models: create what is missing, never drop."""
        from tasks import sync as schema_sync

        run_task(
            c,
            "local",
            "sync",
            {"check": check, "backup": backup},
            lambda s: schema_sync.sync(s, check=check, backup=backup),
            changes_database=not check,
        )

    return [sync]
