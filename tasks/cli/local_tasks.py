"""Tasks only the `local` collection has: the fast schema sync, backup, restore and reset.

Each task parses its flags and calls one core function through the shared context. `invoke
--list` imports this module: everything heavy is imported inside the task bodies.

Exit codes (tasks.core.errors.ExitCode): 0 OK; 1 FAILED (database or tool error, rolled back where
the dialect allows); 2 USAGE (bad flag, missing/unreadable/foreign backup file, missing dump
tool, unwritable backup directory); 3 REFUSED (not confirmed, or no terminal and no --yes);
4 DIFFERENCES (`sync --check`: only differences sync can apply); 5 NEEDS_REVISION (differences
that need a revision or a manual step; after `sync`, what it left alone).
"""

from __future__ import annotations

from pathlib import Path

from invoke import Context, Task

from tasks.cli.context import run_task
from tasks.cli.flags import flag_task
from tasks.core.errors import UsageError

YES_HELP = "answer the confirmation prompt (scripts, CI); never implied"
BACKUP_HELP = "back the database up first; if the backup fails, nothing changes"


def local_tasks() -> list[Task]:
    @flag_task(
        help={
            "check": "report differences only, change nothing: exit 0 in sync, 4 only "
            "differences sync can apply, 5 differences that need a revision",
            "backup": BACKUP_HELP,
            "json": "print the report as JSON (for machines)",
        }
    )
    def sync(c: Context, check: bool = False, backup: bool = False, json: bool = False) -> None:
        """Bring the local database up to the models: add what is missing, never drop.

        Exit 0: the database matches the models. 5: sync applied what it could; what is left
        needs a revision or a manual step (listed with the Alembic operation to use). 1: applying
        failed and was rolled back (MySQL/MariaDB cannot roll DDL back). --check: 0 in sync,
        4 only differences sync can apply, 5 differences that need a revision.
        """
        from tasks.migrate.sync_history import record_history
        from tasks.schema import sync as schema_sync

        run_task(
            c,
            "local",
            "sync",
            {"check": check, "backup": backup, "json": json},
            lambda s: schema_sync.sync(
                s, check=check, backup=backup, as_json=json, history=record_history
            ),
            read_only=check,
        )

    @flag_task
    def backup(c: Context) -> None:
        """Back the local database up into the backup directory; prints the file's path."""
        from tasks.backup.backups import create_backup

        run_task(c, "local", "backup", {}, create_backup)

    @flag_task(
        help={
            "file": "required: the backup file to restore",
            "yes": YES_HELP,
            "backup": "back the current database up before replacing it",
        }
    )
    def restore(c: Context, file: str = "", yes: bool = False, backup: bool = False) -> None:
        """Replace the local database with a backup, after confirmation."""
        from tasks.backup.backups import restore_with_backup

        run_task(
            c,
            "local",
            "restore",
            {"file": file, "yes": yes, "backup": backup},
            lambda s: restore_with_backup(s, _required_file(file), backup=backup),
            assume_yes=yes,
        )

    @flag_task(help={"yes": YES_HELP, "backup": BACKUP_HELP})
    def reset(c: Context, yes: bool = False, backup: bool = False) -> None:
        """Drop everything in the local database and recreate it from the models."""
        from tasks.schema import sync as schema_sync

        run_task(
            c,
            "local",
            "reset",
            {"yes": yes, "backup": backup},
            lambda s: schema_sync.reset(s, backup=backup),
            assume_yes=yes,
        )

    return [sync, backup, restore, reset]


def _required_file(file: str) -> Path:
    if not file.strip():
        raise UsageError("restore needs --file PATH (a file written by `invoke local.backup`)")
    return Path(file.strip())
