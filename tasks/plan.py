"""What an upgrade or downgrade will do, revision by revision, before it does it.

Each pending step's SQL is rendered in Alembic's offline mode, one step at a time through
Alembic's own planner, so the SQL shown is the SQL that will run; `tasks.lint` classifies it.
Revisions that read the database while migrating cannot be rendered offline (alembic #740): the
plan says so for that revision instead of failing.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tasks import lint
from tasks.alembic_support import EnvHandover, alembic_config
from tasks.session import Console, Session

if TYPE_CHECKING:
    from alembic.runtime.migration import MigrationStep
    from alembic.script import ScriptDirectory


@dataclass
class PlannedRevision:
    revision: str
    message: str
    path: str
    sql: str
    findings: list[lint.Finding] = field(default_factory=list)
    render_error: str | None = None

    @property
    def destructive(self) -> list[lint.Finding]:
        return [finding for finding in self.findings if finding.severity == lint.DESTRUCTIVE]

    def as_dict(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "message": self.message,
            "file": self.path,
            "sql": self.sql,
            "findings": [finding.as_dict() for finding in self.findings],
            "render_error": self.render_error,
        }


@dataclass
class Plan:
    environment: str
    direction: str
    current: list[str]
    target: str
    revisions: list[PlannedRevision]

    def destructive(self) -> list[tuple[str, lint.Finding]]:
        return [(item.revision, finding) for item in self.revisions for finding in item.destructive]

    def as_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "direction": self.direction,
            "current": self.current,
            "target": self.target,
            "revisions": [item.as_dict() for item in self.revisions],
            "destructive": len(self.destructive()),
        }


def build_plan(
    session: Session,
    script: ScriptDirectory,
    steps: list[MigrationStep],
    *,
    direction: str,
    current: tuple[str, ...],
    target: str,
) -> Plan:
    """Render and lint every step; no connection is used."""
    planned = [_plan_step(session, script, step) for step in steps]
    return Plan(session.environment.name, direction, list(current), target, planned)


def _plan_step(session: Session, script: ScriptDirectory, step: MigrationStep) -> PlannedRevision:
    revision = step.revision  # type: ignore[attr-defined]
    path = _relative(session, revision.path)
    try:
        sql = render_step_sql(session, script, step)
    except Exception as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        finding = lint.Finding("not-renderable", lint.WARNING, f"no offline SQL: {reason}", "")
        return PlannedRevision(revision.revision, revision.doc or "", path, "", [finding], reason)
    dialect = session.environment.dialect
    findings = lint.lint(sql, dialect, session.settings.lint_ignore, _squawk_preamble(session))
    return PlannedRevision(revision.revision, revision.doc or "", path, sql, findings)


def render_step_sql(session: Session, script: ScriptDirectory, step: MigrationStep) -> str:
    """The SQL of exactly one migration step, through Alembic's offline mode."""
    from alembic.runtime.environment import EnvironmentContext

    buffer = io.StringIO()
    handover = EnvHandover(
        environment=session.environment,
        metadata_path=session.settings.metadata,
        metadata=session._metadata,
    )
    config = alembic_config(session.settings, handover, stdout=io.StringIO(), sql_output=buffer)
    starting = ",".join(step.from_revisions) or None
    destination = ",".join(step.to_revisions) or None
    with EnvironmentContext(
        config,
        script,
        fn=lambda _heads, _context: [step],
        as_sql=True,
        starting_rev=starting,
        destination_rev=destination,
    ):
        script.run_env()
    return buffer.getvalue()


def _squawk_preamble(session: Session) -> str:
    """The session settings the migration will really run under, so squawk judges that."""
    configured = session.settings.environment(session.environment.name)
    lines = []
    if configured.postgres_lock_timeout:
        lines.append(f"SET lock_timeout = '{configured.postgres_lock_timeout}';\n")
    if configured.postgres_statement_timeout:
        lines.append(f"SET statement_timeout = '{configured.postgres_statement_timeout}';\n")
    return "".join(lines)


def _relative(session: Session, path: str) -> str:
    from pathlib import Path

    try:
        return str(Path(path).resolve().relative_to(session.settings.root))
    except ValueError:
        return path


def print_plan(console: Console, plan: Plan, *, show_sql: bool) -> None:
    """The plan for people: revisions in order, their findings, and the SQL when asked."""
    verb = "apply" if plan.direction == "upgrade" else "revert"
    current = ", ".join(plan.current) or "base"
    console.line(
        f"{plan.environment}: at {current}; {len(plan.revisions)} revision(s) to {verb} "
        f"(target {plan.target})"
    )
    for item in plan.revisions:
        console.line(f"  {item.revision} {item.message}  [{item.path}]".rstrip())
        for finding in item.findings:
            tag = "DESTRUCTIVE" if finding.severity == lint.DESTRUCTIVE else "warning"
            where = f": {finding.statement}" if finding.statement else ""
            console.line(f"    {tag} {finding.rule} ({finding.message}){where}")
        if show_sql and item.sql:
            for line in lint.statements(item.sql):
                console.line("    | " + line.replace("\n", "\n    | ") + ";")
    destructive = plan.destructive()
    if destructive:
        console.warning(f"{len(destructive)} destructive statement(s) in this plan")
