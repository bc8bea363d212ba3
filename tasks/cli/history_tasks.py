"""Tasks that keep the history trustworthy: `repair --accept-edit` on every environment, and
`checksums` (the committed checksum file) where revision files are written."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from invoke import Context, Task

from tasks.cli.flags import LOCK_HELP, YES_HELP, flag_task


def repair_tasks(run_changing: Callable[..., None]) -> list[Task]:
    """`repair` for every environment collection. Its ways of repairing are flags, each its own
    operation, so other repairs can be added beside `--accept-edit`."""

    @flag_task(
        help={
            "rev": "required: the revision to repair",
            "accept_edit": "record the edited revision's new checksum (after review)",
            "reason": "required with --accept-edit: why (kept in the audit row)",
            "yes": YES_HELP,
            "lock_timeout": LOCK_HELP,
        }
    )
    def repair(
        c: Context,
        rev: str = "",
        accept_edit: bool = False,
        reason: str = "",
        yes: bool = False,
        lock_timeout: str = "",
    ) -> None:
        """Repair the tasks' bookkeeping of a revision (--accept-edit: an edited applied one)."""
        from tasks.core.errors import UsageError
        from tasks.migrate import commands as migrations

        arguments: dict[str, Any] = {
            "rev": rev,
            "accept_edit": accept_edit,
            "reason": reason,
            "yes": yes,
        }

        def operation(session: Any) -> None:
            if not rev.strip():
                raise UsageError("repair needs --rev: the revision to repair")
            if accept_edit:
                migrations.accept_edit(session, rev.strip(), reason=reason)
                return
            raise UsageError("repair needs what to repair: --accept-edit")

        run_changing(
            c, "repair", arguments, operation, sql=False, yes=yes, lock_timeout=lock_timeout
        )

    return [repair]


def checksum_tasks(run: Callable[..., None]) -> list[Task]:
    """`checksums` and `squash` for the collections that write revisions (local, dev)."""

    @flag_task(help={"write": "write alembic/checksums.json (commit it; ci.check compares)"})
    def checksums(c: Context, write: bool = False) -> None:
        """Each revision's checksum against the committed checksum file (--write writes it)."""
        from tasks.history.checksum_file import show
        from tasks.migrate.commands import script_directory

        operation = lambda s: show(s, script_directory(s), write=write)  # noqa: E731
        run(c, "checksums", {"write": write}, operation)

    @flag_task(
        help={
            "rev": "required: the last revision of the range (root..REV) to squash; keeps its id",
            "dry_run": "build and prove the baseline, write nothing",
            "force": "squash even when databases are behind REV (named in the baseline)",
        }
    )
    def squash(c: Context, rev: str = "", dry_run: bool = False, force: bool = False) -> None:
        """Replace root..REV by one baseline revision, proven equal on ci.dialects first."""
        from tasks.squash.command import squash as squash_history

        operation = lambda s: squash_history(s, rev, dry_run=dry_run, force=force)  # noqa: E731
        arguments = {"rev": rev, "dry_run": dry_run, "force": force}
        run(c, "squash", arguments, operation)

    return [checksums, squash]
