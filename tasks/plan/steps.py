"""What an upgrade or downgrade will do, revision by revision, before it does it.

Each pending step's SQL is rendered in Alembic's offline mode, one step at a time through
Alembic's own planner, so the SQL shown is the SQL that will run; `tasks.lint.classifier`
classifies it.
Revisions that read the database while migrating cannot be rendered offline (alembic #740). On
SQLite (where every batch operation reflects its table) the plan then rehearses the pending
revisions on a copy of the database file and shows the SQL they really ran; elsewhere it says so
for that revision and scans its source for destructive operations instead of failing. A
revision whose source shows it runs differently online (`is_offline_mode()`, `as_sql`, the
connection) is rendered and also scanned: what the scan cannot prove safe needs consent.
"""

from __future__ import annotations

import io
import re
import shutil
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core.alembic_config import alembic_config
from tasks.core.console import Console, plural
from tasks.core.handover import EnvHandover
from tasks.core.session import Session
from tasks.lint import residue as ddl_residue
from tasks.plan import written_consent

if TYPE_CHECKING:
    from tasks.lint import classifier as lint
else:

    class _Classifier:
        """`tasks.lint.classifier`, imported on first use: reading tasks (current, history,
        heads) import this module but never lint, and the classifier is the largest module."""

        def __getattr__(self, name: str) -> Any:
            import importlib

            return getattr(importlib.import_module("tasks.lint.classifier"), name)

    lint = _Classifier()

if TYPE_CHECKING:
    from collections.abc import Callable

    from alembic.runtime.migration import RevisionStep
    from alembic.script import ScriptDirectory


@dataclass
class PlannedRevision:
    revision: str
    message: str
    path: str
    sql: str
    findings: list[lint.Finding] = field(default_factory=list)
    render_error: str | None = None

    rendered: str = "offline"  # or "rehearsal" (run on a copy of a SQLite file), or "none"
    statements: list[str] = field(default_factory=list)  # the revision's own, in order
    consent: dict[str, str] = field(default_factory=dict)  # written in the revision: rule -> why
    file_sha256: str = ""  # of the revision file, when it holds written consent

    @property
    def destructive(self) -> list[lint.Finding]:
        return [finding for finding in self.findings if finding.severity == lint.DESTRUCTIVE]

    @property
    def needing_consent(self) -> list[lint.Finding]:
        """Destructive and blocking findings the revision's written consent does not cover."""
        return [
            finding
            for finding in self.findings
            if finding.severity in lint.NEEDS_CONSENT and finding.rule not in self.consent
        ]

    @property
    def consented(self) -> list[lint.Finding]:
        """Findings the revision's written consent covers."""
        return [
            finding
            for finding in self.findings
            if finding.severity in lint.NEEDS_CONSENT and finding.rule in self.consent
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "message": self.message,
            "file": self.path,
            "sql": self.sql,
            "rendered": self.rendered,
            "statements": self.statements,
            "findings": [finding.as_dict() for finding in self.findings],
            "consent": self.consent,
            "render_error": self.render_error,
        }


@dataclass
class Plan:
    environment: str
    direction: str
    current: list[str]
    target: str
    revisions: list[PlannedRevision]
    shadowed: frozenset[str] = frozenset()  # see shadowed_functions

    def destructive(self) -> list[tuple[str, lint.Finding]]:
        return [(item.revision, finding) for item in self.revisions for finding in item.destructive]

    def needing_consent(self) -> list[tuple[str, lint.Finding]]:
        """Destructive and blocking findings: what --allow-destructive (or typing it) accepts."""
        return [
            (item.revision, finding) for item in self.revisions for finding in item.needing_consent
        ]

    def as_dict(self) -> dict[str, Any]:
        severities = [finding.severity for _, finding in self.needing_consent()]
        return {
            "environment": self.environment,
            "direction": self.direction,
            "current": self.current,
            "target": self.target,
            "revisions": [item.as_dict() for item in self.revisions],
            "destructive": severities.count(lint.DESTRUCTIVE),
            "blocking": severities.count(lint.BLOCKING),
            "needs_consent": len(severities),
            "summary": summary(self),
        }


def build_plan(
    session: Session,
    script: ScriptDirectory,
    steps: list[RevisionStep],
    *,
    direction: str,
    current: tuple[str, ...],
    target: str,
    server_version: tuple[int | str, ...] | None = None,
) -> Plan:
    """Render and lint every step; the database itself is never changed.

    `server_version` (PostgreSQL's, when the caller is connected) tells squawk which rules
    apply to that server.
    """
    pg_version = ".".join(str(part) for part in server_version[:2]) if server_version else None
    catalog = lint.Catalog(lookup=_column_lookup(session))  # shared: revisions build on each other
    catalog.shadowed = shadowed_functions(session)
    planned = [_plan_step(session, script, step, pg_version, catalog) for step in steps]
    if session.environment.dialect == "sqlite" and any(item.render_error for item in planned):
        _rehearse_on_copy(session, planned, direction, target)
    plan = Plan(session.environment.name, direction, list(current), target, planned)
    plan.shadowed = catalog.shadowed
    return plan


# User functions (not an extension's) in any schema but the system ones: PostgreSQL may resolve
# an unqualified call of a built-in's name to one of them (`lower(integer)`).
_USER_FUNCTIONS = """
SELECT DISTINCT lower(p.proname) FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
AND NOT EXISTS (
    SELECT 1 FROM pg_catalog.pg_depend d
    WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p.oid
    AND d.deptype = 'e'
)
"""


def shadowed_functions(session: Session) -> frozenset[str]:
    """The allow-listed function names a user function also has on this PostgreSQL database:
    unqualified calls of them are not trusted (`tasks.lint.postgres.trusted_call`). A database
    that cannot be asked shadows every name (fails closed)."""
    if session.environment.dialect != "postgresql":
        return frozenset()
    from sqlalchemy import text

    try:
        with session.connect() as connection:
            names = {row[0] for row in connection.execute(text(_USER_FUNCTIONS))}
    except Exception:
        return frozenset(lint.SAFE_FUNCTIONS)
    return frozenset(names & lint.SAFE_FUNCTIONS)


def _plan_step(
    session: Session,
    script: ScriptDirectory,
    step: RevisionStep,
    pg_version: str | None,
    catalog: lint.Catalog,
) -> PlannedRevision:
    revision = step.revision
    path = _relative(session, revision.path)
    ignored = session.settings.lint_ignore
    dialect = session.environment.dialect
    try:
        sql = render_step_sql(session, script, step)
    except Exception as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        finding = lint.finding(lint.Rule.NOT_RENDERABLE, f"no offline SQL: {reason}")
        source = lint.scan_source(_source(revision.path), step.is_upgrade, ignored, dialect)
        planned = PlannedRevision(
            revision.revision, revision.doc or "", path, "", [finding, *source], reason, "none"
        )
        if step.is_upgrade:
            _read_written_consent(planned, revision)
        return planned
    findings = lint.lint(
        sql,
        dialect,
        ignored,
        _squawk_preamble(session),
        pg_version,
        catalog,
        session.environment.schema,
    )
    findings.extend(_non_atomic_ddl(sql, dialect, ignored))
    findings.extend(_online_only(revision.path, step.is_upgrade, ignored, dialect))
    planned = PlannedRevision(revision.revision, revision.doc or "", path, sql, findings)
    planned.statements = lint.statements(sql, dialect, session.environment.schema)
    if step.is_upgrade:
        _read_written_consent(planned, revision)
    return planned


def _read_written_consent(planned: PlannedRevision, revision: Any) -> None:
    """The revision file's `consent = {rule: reason}`, checked against what the plan found."""
    planned.consent = written_consent.read(revision.module, planned.path)
    if planned.consent:
        written_consent.check_matches(planned.consent, planned.findings, planned.path)
        planned.file_sha256 = written_consent.file_hash(revision.path)


def _column_lookup(session: Session) -> Callable[[str, str], str | None]:
    """The live database's column types, reflected once per table on first need.

    Only an ALTER COLUMN TYPE on a column the plan's own SQL never defined asks; a failure or
    a missing table answers None (unknown), which the classifier never takes as safe.
    """
    tables: dict[str, dict[str, str]] = {}

    def lookup(table: str, column: str) -> str | None:
        if table not in tables:
            tables[table] = _reflect_columns(session, table)
        return tables[table].get(column)

    return lookup


def _reflect_columns(session: Session, table: str) -> dict[str, str]:
    from sqlalchemy import inspect

    try:
        with session.connect() as connection:
            dialect = connection.dialect
            schema, _, name = table.rpartition(".")
            columns = inspect(connection).get_columns(name, schema=schema or None)
            return {
                column["name"]: " ".join(str(column["type"].compile(dialect=dialect)).split())
                .lower()
                .replace(" (", "(")
                for column in columns
            }
    except Exception:
        return {}


def _non_atomic_ddl(sql: str, dialect: str, ignored: Any) -> list[lint.Finding]:
    """MySQL/MariaDB commit each DDL statement: a revision with several cannot be atomic."""
    rule = lint.Rule.NON_ATOMIC_DDL
    if not ddl_residue.takes_snapshots(dialect) or rule in ignored:
        return []
    count = ddl_residue.ddl_statement_count(sql)
    if count < 2:
        return []
    message = (
        f"{count} DDL statements, each committed on its own by MySQL/MariaDB: if one fails, "
        "the earlier ones stay applied and the revision must be finished or undone by hand"
    )
    return [lint.finding(rule, message)]


def _online_only(path: str, upgrade: bool, ignored: Any, dialect: str) -> list[lint.Finding]:
    """The source scan of a revision that shows it runs differently online (it asks for
    offline mode, or uses the connection): its offline SQL is not the whole story, so what
    the scan cannot prove safe needs consent too."""
    source = _source(path)
    if not lint.runs_differently_online(source, upgrade):
        return []
    return lint.scan_source(source, upgrade, ignored, dialect, why=lint.RUNS_ONLINE)


def _source(path: str) -> str:
    from pathlib import Path

    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError:
        return ""


def _rehearse_on_copy(
    session: Session, planned: list[PlannedRevision], direction: str, target: str
) -> None:
    """Run the pending steps on a copy of the SQLite file and keep the SQL each one ran.

    Alembic's batch mode reflects the table it rebuilds, which offline mode cannot do: without
    this, every SQLite revision autogenerate writes for an ALTER would be unrenderable and its
    rebuild (and the columns it loses) invisible. The copy is made with SQLite's backup API,
    so it is consistent even while the database is in use, and is deleted afterwards.
    """
    import tempfile

    try:
        with tempfile.TemporaryDirectory(prefix="migrations-rehearsal-") as directory:
            ran = rehearse(session, direction, target, f"{directory}/copy.sqlite3")
    except Exception as error:
        reason = f"rehearsal on a copy failed: {' '.join(str(error).split())[:300]}"
        for item in planned:
            if item.render_error:
                item.findings.append(lint.finding(lint.Rule.REHEARSAL_FAILED, reason))
        return
    for item in planned:
        if item.render_error and item.revision in ran:
            item.sql = "".join(f"{statement};\n\n" for statement in ran[item.revision])
            item.findings = lint.classify(item.sql, "sqlite", session.settings.lint_ignore)
            item.statements = lint.statements(item.sql, "sqlite")
            item.render_error = None
            item.rendered = "rehearsal"


def rehearse(session: Session, direction: str, target: str, copy: str) -> dict[str, list[str]]:
    from alembic import command
    from sqlalchemy import event
    from sqlalchemy.engine import URL

    from tasks.backup.sqlite import copy_sqlite
    from tasks.core.engines import create_engine
    from tasks.core.environments import Environment

    original = session.environment.url.database
    if original and original != ":memory:" and Path(original).exists():
        copy_sqlite(Path(original), Path(copy), timeout=session.settings.connect_timeout)
    url = URL.create("sqlite", database=copy)
    name = session.environment.name
    rehearsal = Environment(name, url, "(rehearsal)", "rehearsal", protected=False, shared=False)
    engine = create_engine(url)
    ran: dict[str, list[str]] = {}
    current: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _capture(
        _conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, _many: bool
    ) -> None:
        if not _REHEARSAL_NOISE.match(statement):
            current.append(statement.strip())

    def cut(revision_id: str, _doc: str, _is_upgrade: bool, _connection: Any) -> None:
        ran[revision_id] = list(current)
        current.clear()

    try:
        with engine.connect() as connection:
            handover = EnvHandover(
                environment=rehearsal,
                metadata_path=session.settings.metadata,
                connection=connection,
                metadata=session.metadata(),
                on_revision_applied=cut,
            )
            config = alembic_config(session.settings, handover, stdout=io.StringIO())
            operation = command.upgrade if direction == "upgrade" else command.downgrade
            operation(config, target)
            connection.rollback()
    finally:
        engine.dispose()
    return ran


# Reads and bookkeeping a rehearsal runs besides the revisions' own statements.
_REHEARSAL_NOISE = re.compile(r"\s*(PRAGMA|SELECT|BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE)\b", re.I)


def render_step_sql(session: Session, script: ScriptDirectory, step: RevisionStep) -> str:
    """The SQL of exactly one migration step, through Alembic's offline mode."""
    from alembic.runtime.environment import EnvironmentContext

    buffer = io.StringIO()
    handover = EnvHandover(
        environment=session.environment,
        metadata_path=session.settings.metadata,
        metadata=session.metadata(),
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
    environment = session.environment
    lines = []
    if environment.postgres_lock_timeout:
        lines.append(f"SET lock_timeout = '{environment.postgres_lock_timeout}';\n")
    if environment.postgres_statement_timeout:
        lines.append(f"SET statement_timeout = '{environment.postgres_statement_timeout}';\n")
    return "".join(lines)


def _relative(session: Session, path: str) -> str:
    from pathlib import Path

    try:
        return str(Path(path).resolve().relative_to(session.settings.root))
    except ValueError:
        return path


def print_plan(console: Console, plan: Plan, *, show_sql: bool) -> None:
    """The plan for people: each revision's statements in full, each finding under its statement.

    Lines are wrapped to the terminal's width (never cut with "..."); the plan ends with a
    one-line summary of what needs consent. With `show_sql` False only the statements that
    have findings are shown.
    """
    width = max(40, shutil.get_terminal_size((100, 24)).columns)
    verb = "apply" if plan.direction == "upgrade" else "revert"
    current = ", ".join(plan.current) or "base"
    console.line(
        f"{plan.environment}: at {current}; {plural(len(plan.revisions), 'revision')} to {verb} "
        f"(target {plan.target})"
    )
    for item in plan.revisions:
        console.line(f"  {item.revision} {item.message}  [{item.path}]".rstrip())
        for line in _revision_lines(item, show_sql, width):
            console.line(line)
        for rule, reason in item.consent.items():  # written in the revision, reviewed with it
            for line in _wrap(
                f"consent in the revision: {rule}: {reason}", "    ", "      ", width
            ):
                console.line(line)
    console.line(summary(plan))  # on stdout, part of the plan: stderr says how the run ended


def _revision_lines(item: PlannedRevision, show_sql: bool, width: int) -> list[str]:
    """A revision's statements, each followed by its findings; then findings with no statement."""
    by_statement: dict[str, list[lint.Finding]] = {}
    for finding in item.findings:
        by_statement.setdefault(finding.statement, []).append(finding)
    lines: list[str] = []
    for statement in item.statements:
        found = by_statement.pop(statement, [])
        if show_sql or found:
            lines += _sql_lines(statement, width)
            for finding in found:
                lines += _finding_lines(finding, "      ", width)
    for statement, found in by_statement.items():  # source lines, render errors
        for finding in found:
            lines += _finding_lines(finding, "    ", width)
            if statement:
                lines += _wrap(f"in: {statement}", "      ", "          ", width)
    return lines


def _sql_lines(statement: str, width: int) -> list[str]:
    lines: list[str] = []
    text = statement + ";"
    for line in text.splitlines():
        lines += _wrap(line, "    | ", "    |     ", width)
    return lines


def _finding_lines(finding: lint.Finding, indent: str, width: int) -> list[str]:
    tag = _TAGS.get(finding.severity, finding.severity)
    lines = _wrap(f"{tag} {finding.rule}: {finding.message}", indent, indent + "    ", width)
    if finding.help:
        lines += _wrap(f"help: {finding.help}", indent + "  ", indent + "        ", width)
    return lines


def _wrap(text: str, first: str, rest: str, width: int) -> list[str]:
    """Wrap at spaces only: long words and identifiers stay whole, nothing is cut."""
    return textwrap.wrap(
        text,
        width=width,
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
        drop_whitespace=True,
    ) or [first.rstrip()]


# Subjects named per severity in the summary line; the plan above it lists every finding.
SUMMARY_SUBJECTS = 5


def summary(plan: Plan) -> str:
    """`2 revisions, 5 statements: 1 destructive (drop column users.legacy), 0 blocking`."""
    revisions = len(plan.revisions)
    count = sum(len(item.statements) for item in plan.revisions)
    consent = [finding for _, finding in plan.needing_consent()]

    def part(severity: str) -> str:
        subjects = [
            readable_subject(f.subject or f.rule) for f in consent if f.severity == severity
        ]
        distinct = list(dict.fromkeys(subjects))
        shown = ", ".join(distinct[:SUMMARY_SUBJECTS])
        if len(distinct) > SUMMARY_SUBJECTS:
            shown += f", {len(distinct) - SUMMARY_SUBJECTS} more"
        listed = f" ({shown})" if subjects else ""
        return f"{len(subjects)} {severity}{listed}"

    warnings = sum(
        finding.severity == lint.WARNING for item in plan.revisions for finding in item.findings
    )
    unknown = sum(item.rendered == "none" for item in plan.revisions)
    rendered = f" ({unknown} not rendered)" if unknown else ""
    written = [finding for item in plan.revisions for finding in item.consented]
    consented = (
        f"; consent written in the revision: {len(written)} "
        f"({', '.join(dict.fromkeys(f.subject or f.rule for f in written))})"
        if written
        else ""
    )
    return (
        f"{_plural(revisions, 'revision')}, {_plural(count, 'statement')}{rendered}: "
        f"{part(lint.DESTRUCTIVE)}, {part(lint.BLOCKING)}, {_plural(warnings, 'warning')}"
        f"{consented}"
    )


_PARSER_NAME = re.compile(r"sval='((?:[^'\\]|\\.)*)'")


def readable_subject(subject: str) -> str:
    """A finding's subject in words: a parser node's repr (`drop type <TypeName names=(<String
    sval='mood'>,) ...>`) becomes the names it holds (`drop type mood`)."""
    if "<" not in subject:
        return subject
    head, _, rest = subject.partition("<")
    names = _PARSER_NAME.findall(rest)
    if not names:
        return head.strip() or subject
    return f"{head.strip()} {'.'.join(names)}".strip()


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


_TAGS = {"destructive": "DESTRUCTIVE", "blocking": "BLOCKING", "warning": "warning"}  # lint's
