"""The audit trail inside each shared database: who changed what, when, and how it went.

The JSON-lines log lives on the operator's machine; this table travels with the database, so
anyone with access to production can answer "who ran that downgrade" without the laptop that
ran it. Created on first use, in its own MetaData, and listed in TOOL_TABLES so autogenerate and
sync never see it.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core.engines import connect

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection

    from tasks.core.environments import Environment
    from tasks.core.run_log import RunRecord
    from tasks.core.session import Session

AUDIT_TABLE = "migration_audit"


@cache
def audit_table() -> Table:
    from sqlalchemy import Column, DateTime, Float, Integer, MetaData, String, Table, Text

    return Table(
        AUDIT_TABLE,
        MetaData(),
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("started_at", DateTime(timezone=True), nullable=False),
        Column("finished_at", DateTime(timezone=True), nullable=False),
        Column("duration_ms", Float, nullable=False),
        Column("environment", String(64), nullable=False),
        Column("task", String(128), nullable=False),
        Column("arguments", Text),
        Column("operator", String(255)),
        Column("host", String(255)),
        Column("revision_before", String(255)),
        Column("revision_after", String(255)),
        Column("outcome", String(16), nullable=False),
        Column("error", Text),
        Column("git_commit", String(64)),
    )


def record_run(
    environment: Environment,
    record: RunRecord,
    *,
    outcome: str,
    error: str | None,
    duration_ms: float,
    root: Path,
    connect_timeout: float,
) -> None:
    """Append one row for this run, creating the table the first time."""
    finished = datetime.now(UTC)
    row = {
        "started_at": record.started_at,
        "finished_at": finished,
        "duration_ms": round(duration_ms, 1),
        "environment": environment.name,
        "task": record.task,
        "arguments": json.dumps(record.arguments, default=str),
        "operator": record.operator,
        "host": record.host,
        "revision_before": _revisions(record.revision_before),
        "revision_after": _revisions(record.revision_after),
        "outcome": outcome,
        "error": error,
        "git_commit": git_commit(root),
    }
    table = audit_table()
    with connect(environment, connect_timeout) as connection:
        _ensure_table(connection, table)
        with connection.begin():
            connection.execute(table.insert().values(**row))


def _ensure_table(connection: Connection, table: Table) -> None:
    """Create the audit table unless it exists, also when several runners finish at once.

    Runners write their row after releasing the migration lock, so the first rows of a fresh
    database can race to create the table: both see it missing, one CREATE wins and the other
    fails (on PostgreSQL with a unique violation in pg_type). The loser finds the table there
    and writes its row; losing the row would lose the record of a run.
    """
    from sqlalchemy import inspect
    from sqlalchemy.exc import DBAPIError

    try:
        with connection.begin():
            table.create(connection, checkfirst=True)
    except DBAPIError:
        exists = inspect(connection).has_table(table.name)
        connection.rollback()
        if not exists:
            raise


def read_runs(
    environment: Environment, *, limit: int, connect_timeout: float
) -> list[dict[str, Any]]:
    """The latest `limit` runs, newest first; an empty list when nothing was recorded yet."""
    from sqlalchemy import inspect, select

    table = audit_table()
    with connect(environment, connect_timeout) as connection:
        if not inspect(connection).has_table(AUDIT_TABLE):
            return []
        query = select(table).order_by(table.c.id.desc()).limit(limit)
        return [dict(row._mapping) for row in connection.execute(query)]


def _revisions(revisions: list[str] | None) -> str | None:
    return None if revisions is None else ",".join(revisions)


# Untracked files that change what a run does: revision files above all, models, templates and
# configuration. A revision that exists only in one working tree is the change the audit row must
# not attribute to a clean commit.
UNTRACKED_THAT_COUNT = (".py", ".mako", ".ini", ".yaml", ".yml", ".toml", ".cfg")


@cache
def git_commit(root: Path) -> str | None:
    """The repository's commit, marked -dirty when the working tree has changes: tracked files
    changed, or untracked code and configuration (an uncommitted revision file)."""
    try:
        commit = _git(root, "rev-parse", "--short=12", "HEAD")
        changed = _git(root, "status", "--porcelain", "--untracked-files=no")
        untracked = _git(root, "ls-files", "--others", "--exclude-standard")
    except (OSError, subprocess.SubprocessError):
        return None
    if not commit:
        return None
    new_code = [name for name in untracked.splitlines() if name.endswith(UNTRACKED_THAT_COUNT)]
    return f"{commit}-dirty" if changed or new_code else commit


def _git(root: Path, *arguments: str) -> str:
    """What `git *arguments` printed on stdout, stripped; usually "" when git fails."""
    # GIT_OPTIONAL_LOCKS=0: `git status` must not take index.lock to refresh the index, which
    # would collide with the operator's own git commands (and leave a stale lock if killed).
    result = subprocess.run(
        ["git", *arguments],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
        env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
    )
    return result.stdout.strip()


def show_runs(session: Session, *, limit: int = 20, as_json: bool = False) -> list[dict[str, Any]]:
    """Print the latest audit rows of the session's database, newest first: an aligned table
    with a header (operator and host in their own columns), or JSON with `arguments` as an
    object."""
    from tasks.core.errors import UsageError

    if limit < 1:
        raise UsageError("--limit must be at least 1")
    rows = read_runs(
        session.environment, limit=limit, connect_timeout=session.settings.connect_timeout
    )
    if as_json:
        shown = [{**row, "arguments": _arguments(row.get("arguments"))} for row in rows]
        session.console.line(json.dumps(shown, indent=2, default=_iso))
        return shown
    if not rows:
        session.console.line(f"{session.environment.name}: no audited runs yet")
        return rows
    for line in audit_table_lines(rows):
        session.console.line(line)
    return rows


def _iso(value: Any) -> str:
    """Times as ISO 8601 (`2026-12-07T12:00:00+00:00`); anything else as its text."""
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


AUDIT_COLUMNS = (
    "STARTED (UTC)",
    "OUTCOME",
    "TASK",
    "REVISIONS",
    "OPERATOR",
    "HOST",
    "DURATION",
    "COMMIT",
)


def audit_table_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The rows as an aligned table; an error follows its row, indented."""
    from tasks.core.console import one_value

    cells = [
        [  # each cell one value: a line break in an operator or a revision forges no row
            one_value(cell)
            for cell in (
                _started(row["started_at"]),
                str(row["outcome"]),
                str(row["task"]),
                f"{_shown(row['revision_before'])} -> {_shown(row['revision_after'])}",
                row["operator"] or "?",
                row["host"] or "?",
                _duration(row["duration_ms"]),
                row["git_commit"] or "",
            )
        ]
        for row in rows
    ]
    widths = [
        max(len(header), *(len(line[index]) for line in cells))
        for index, header in enumerate(AUDIT_COLUMNS)
    ]
    lines = [_aligned(AUDIT_COLUMNS, widths)]
    for row, line in zip(rows, cells, strict=True):
        lines.append(_aligned(line, widths))
        if row["error"]:
            lines.append(f"    error: {one_value(str(row['error']))}")
    return lines


def _aligned(values: Any, widths: list[int]) -> str:
    return "  ".join(
        f"{value:<{width}}" for value, width in zip(values, widths, strict=True)
    ).rstrip()


def _started(value: Any) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return f"{value:%Y-%m-%d %H:%M:%S}"
    return str(value)[:19]


def _duration(milliseconds: float | None) -> str:
    if milliseconds is None:
        return "?"
    if milliseconds < 1000:
        return f"{milliseconds:.0f} ms"
    seconds = milliseconds / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds:02d} s"


def _arguments(value: Any) -> Any:
    """The stored JSON text as an object; anything unreadable stays the text it is."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _shown(revisions: str | None) -> str:
    """NULL means unknown (the run ended before it read the database), "" means base: a failed
    attempt that changed nothing must not read as a move to base."""
    if revisions is None:
        return "?"
    return revisions or "base"
