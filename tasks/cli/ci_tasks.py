"""The `ci` collection: checks a pipeline runs on every change to the migrations."""

from __future__ import annotations

from invoke import Context, Task

from tasks.cli.alembic_tasks import flag_task
from tasks.cli.context import run_task


def ci_tasks() -> list[Task]:
    @flag_task(
        help={
            "format": "text (default) or markdown (pull requests, $GITHUB_STEP_SUMMARY)",
            "base": "a git ref (origin/main): lint only revisions whose files differ from it",
        }
    )
    def check(c: Context, format: str = "", base: str = "") -> None:
        """Heads, real downgrades, stairway and models on ci.dialects, lint (ci.since: trusted)."""
        from tasks.ci import checks as ci_checks

        chosen = format.strip().lower() or "text"
        operation = lambda s: ci_checks.run_checks(  # noqa: E731
            s, as_markdown=chosen == "markdown", base=base.strip() or None
        )
        if chosen not in {"text", "markdown"}:
            operation = _refuse_format(format)
        run_task(c, "ci", "check", {"format": format, "base": base}, operation)

    return [check]


def _refuse_format(format: str):  # type: ignore[no-untyped-def]
    from tasks.core.errors import UsageError

    def operation(_session: object) -> None:
        raise UsageError(f"--format takes text or markdown, not {format!r}")

    return operation
