"""The tasks' flags: one short-flag table for every task, and the help texts tasks share.

Every task is declared with `@flag_task`, so a long flag has the same short flag on every task
that has it (`tests/cli/test_short_flags.py` walks the real collection to hold that).
"""

from __future__ import annotations

from typing import Any

from invoke import Task, task

# One letter, one meaning, for every task (issue 18.6; tests/cli/test_short_flags.py walks the
# real collection). A long flag whose first letter is one of Invoke's own short flags (-c -d -D
# -e -f -F -h -l -p -r -R -T -V -w) must own that letter: otherwise `invoke prod.upgrade -r REV`
# hands REV to Invoke's --search-root and the task runs with its defaults (to head). Where two
# flags would claim one letter, the one that is not the letter's meaning gets a first long name
# that starts with a letter Invoke does not use (LONG_NAMES; its old name stays an alias).
# Consents stay long-only: --allow-destructive and --sql are typed out.
SHORT_FLAGS: dict[str, str] = {
    "rev": "r",
    "lock_timeout": "l",
    "check": "c",
    "format": "f",
    "yes": "y",
    "backup": "b",
    "json": "j",
    "verbose": "v",
    "graph": "g",
    "message": "m",
    "autogenerate": "a",
    "dialect": "d",
    "empty": "e",
    "parallel": "p",
    "write": "w",
}

# Parameter -> its first long name (the old one, `--rev-id`, `--limit`, ... is still accepted).
LONG_NAMES: dict[str, str] = {
    "rev_id": "new-id",  # -r is --rev
    "depends_on": "needs",  # -d is --dialect
    "file": "source",  # -f is --format
    "fleet": "name",  # -f is --format
    "limit": "newest",  # -l is --lock-timeout
    "canary": "trial",  # -c is --check
    "continue_on_error": "keep-going",  # -c is --check (make's name for it)
    "contract": "include-contract",  # -c is --check
    "dry_run": "simulate",  # -d is --dialect (squash: build and prove, write nothing)
    "force": "allow-behind",  # -f is --format (squash although databases are behind REV)
}


class FlagTask(Task):
    """A task whose short flags come from SHORT_FLAGS instead of Invoke's first-free-letter rule,
    which gave `-a` to --allow-destructive on one task and to --autogenerate on another."""

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        auto, self.auto_shortflags = self.auto_shortflags, False
        try:
            opts = super().arg_opts(name, default, taken_names)
        finally:
            self.auto_shortflags = auto
        if name in LONG_NAMES:
            opts["attr_name"] = name
            opts["names"] = [LONG_NAMES[name], *opts["names"]]
        short = SHORT_FLAGS.get(name)
        if short is not None and short not in taken_names:
            opts["names"] = [*opts["names"], short]
        return opts


def flag_task(*args: Any, **kwargs: Any) -> Any:
    """`@task` with the project's short flags (`@flag_task` or `@flag_task(help=...)`)."""
    return task(*args, klass=FlagTask, **kwargs)


YES_HELP = "answer the confirmation prompt (scripts, CI); never implies --allow-destructive"
SQL_HELP = "print the SQL instead of running it (offline mode; opens no connection)"
LOCK_HELP = "seconds to wait for another runner's migration lock (default: configuration, 60)"
BACKUP_HELP = "--no-backup skips the backup taken first on protected and shared databases"
JSON_HELP = "print JSON for machines"
PLAN_FORMAT_HELP = {"format": "text (default), json, or markdown (pull requests, CI summaries)"}
REVISION_OPTION_HELP = {
    "head": "the head to build on (Alembic's --head; e.g. base, or a branch label@head)",
    "splice": "allow --head to name a non-head revision (starts a branch there)",
    "branch_label": "label(s) for a new branch, comma-separated",
    "depends_on": "revision(s) this one depends on, comma-separated",
    "rev_id": "the new revision's id instead of a generated one",
    "empty": "write an empty revision (no autogenerate; needs no database)",
}
