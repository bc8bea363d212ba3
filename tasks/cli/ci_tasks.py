"""The `ci` collection: checks a pipeline runs on every change to the migrations."""

from __future__ import annotations

from invoke import Context, Task

from tasks.cli.alembic_tasks import flag_task
from tasks.cli.context import run_task


def ci_tasks() -> list[Task]:
    @flag_task(
        help={
            "format": "text (default), markdown (pull requests, $GITHUB_STEP_SUMMARY) or json",
            "json": "print JSON for machines (the same as --format json)",
        }
    )
    def check(c: Context, format: str = "", json: bool = False) -> None:
        """Heads, real downgrades, stairway and models on ci.dialects, lint (ci.since: trusted)."""
        from tasks.ci import checks as ci_checks

        chosen = format.strip().lower() or ("json" if json else "text")
        operation = lambda s: ci_checks.run_checks(s, as_markdown=chosen == "markdown")  # noqa: E731
        if chosen not in {"text", "markdown", "json"} or (json and chosen != "json"):
            operation = _refuse_format(format)
        arguments = {"format": format, "json": json}
        run_task(c, "ci", "check", arguments, operation, as_json=chosen == "json")

    return [check]


def _refuse_format(format: str):  # type: ignore[no-untyped-def]
    from tasks.core.errors import UsageError

    def operation(_session: object) -> None:
        raise UsageError(f"--format takes text, markdown or json, not {format!r}")

    return operation
