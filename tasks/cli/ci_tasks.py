"""The `ci` collection: checks a pipeline runs on every change to the migrations."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from invoke import Context, Task

from tasks.cli.context import run_task
from tasks.cli.flags import flag_task

if TYPE_CHECKING:
    from tasks.core.session import Session


def ci_tasks() -> list[Task]:
    @flag_task(
        help={
            "format": "text (default), markdown (pull requests, $GITHUB_STEP_SUMMARY) or json",
            "json": "print JSON for machines (the same as --format json)",
            "base": "a git ref (origin/main): lint only revisions whose files differ from it",
        }
    )
    def check(c: Context, format: str = "", json: bool = False, base: str = "") -> None:
        """Heads, downgrades, checksums, stairway and models on ci.dialects, lint (ci.since)."""
        from tasks.ci import checks as ci_checks
        from tasks.history.checksum_file import ci_outcomes as checksum_file

        chosen = format.strip().lower() or ("json" if json else "text")
        operation: Callable[[Session], object] = lambda s: ci_checks.run_checks(  # noqa: E731
            s, as_markdown=chosen == "markdown", extra=[checksum_file], base=base.strip() or None
        )
        if chosen not in {"text", "markdown", "json"} or (json and chosen != "json"):
            operation = _refuse_format(format)
        arguments = {"format": format, "json": json, "base": base}
        run_task(c, "ci", "check", arguments, operation, as_json=chosen == "json")

    return [check]


def _refuse_format(format: str) -> Callable[[Session], None]:
    from tasks.core.errors import UsageError

    def operation(_session: Session) -> None:
        raise UsageError(f"--format takes text, markdown or json, not {format!r}")

    return operation
