"""Classifying the SQL a revision runs: what loses data, and (on PostgreSQL) what blocks traffic.

Two sources of findings:
- our classifier, for every dialect: statements that drop, retype, rename or tighten
  (destructive) against everything else (ordinary, not reported);
- squawk (the `squawk-cli` package), on PostgreSQL: lock and rewrite hazards under its own
  rule names (`adding-required-field`, `require-concurrent-index-creation`, ...), reported as
  warnings.
Rules named in `migrations.lint.ignore` are dropped from both.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

DESTRUCTIVE = "destructive"
WARNING = "warning"

# Alembic's bookkeeping, not the revision's own work.
_VERSION_TABLE = re.compile(r"\balembic_version\b", re.I)
_BATCH_REBUILD = re.compile(r"ALTER\s+TABLE\s+_alembic_tmp_(\w+)\s+RENAME\s+TO", re.I)

# (rule, pattern, message), first match wins; every rule here is destructive.
_RULES: list[tuple[str, re.Pattern[str], str]] = [
    (rule, re.compile(pattern, re.I | re.S), message)
    for rule, pattern, message in [
        ("drop-table", r"^DROP\s+TABLE\b", "drops a table and all its rows"),
        ("drop-column", r"^ALTER\s+TABLE\b.*\bDROP\s+COLUMN\b", "drops a column and its data"),
        ("drop-index", r"^(DROP\s+INDEX\b|ALTER\s+TABLE\b.*\bDROP\s+INDEX\b)", "drops an index"),
        (
            "drop-constraint",
            r"^ALTER\s+TABLE\b.*\bDROP\s+(CONSTRAINT|FOREIGN\s+KEY|CHECK|PRIMARY\s+KEY)\b",
            "drops a constraint",
        ),
        ("drop-type", r"^DROP\s+TYPE\b", "drops a type"),
        (
            "change-column-type",
            r"^ALTER\s+TABLE\b.*(\bALTER\s+COLUMN\s+\S+\s+(SET\s+DATA\s+)?TYPE\b|\bMODIFY\b)",
            "changes a column's type (may rewrite the table or truncate values)",
        ),
        (
            "set-not-null",
            r"^ALTER\s+TABLE\b.*\bALTER\s+COLUMN\s+\S+\s+SET\s+NOT\s+NULL\b",
            "makes a column NOT NULL (fails on, or requires rewriting, existing NULLs)",
        ),
        (
            "rename",
            r"^(ALTER\s+TABLE\b.*\bRENAME\b|RENAME\s+TABLE\b|ALTER\s+INDEX\b.*\bRENAME\b)",
            "renames a table, column or index (breaks code still using the old name)",
        ),
        ("truncate", r"^TRUNCATE\b", "deletes every row of a table"),
        ("delete-rows", r"^DELETE\s+FROM\b", "deletes rows"),
    ]
]


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    message: str
    statement: str
    source: str = "classifier"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def statements(sql: str) -> list[str]:
    """Split Alembic's offline output into statements, without comments and bookkeeping."""
    found = []
    for chunk in re.split(r";\s*\n", sql):
        lines = [line for line in chunk.splitlines() if not line.strip().startswith("--")]
        text = "\n".join(lines).strip()
        if text and text.upper() not in {"BEGIN", "COMMIT"} and not _VERSION_TABLE.search(text):
            found.append(text)
    return found


def classify(sql: str, ignored: frozenset[str] = frozenset()) -> list[Finding]:
    """Destructive statements in `sql`; SQLite batch rebuilds are reported once per table."""
    parts = statements(sql)
    rebuilt = {match.group(1).lower() for part in parts for match in _BATCH_REBUILD.finditer(part)}
    findings = []
    for statement in parts:
        finding = _classify_statement(statement, rebuilt)
        if finding is not None and finding.rule not in ignored:
            findings.append(finding)
    return findings


def _classify_statement(statement: str, rebuilt: set[str]) -> Finding | None:
    if "_alembic_tmp_" in statement:
        return None  # the copy steps of a batch rebuild; the rebuild is reported at its DROP
    drop = re.match(r"DROP\s+TABLE\s+\"?(\w+)\"?", statement, re.I)
    if drop and drop.group(1).lower() in rebuilt:
        message = "rebuilds the table (SQLite batch mode): columns the new table lacks are lost"
        return Finding("table-rebuild", DESTRUCTIVE, message, _short(statement))
    for rule, pattern, message in _RULES:
        if pattern.search(statement):
            return Finding(rule, DESTRUCTIVE, message, _short(statement))
    return None


def squawk(sql: str, ignored: frozenset[str] = frozenset(), preamble: str = "") -> list[Finding]:
    """Squawk's warnings for PostgreSQL SQL; an empty list when squawk is not installed."""
    binary = squawk_binary()
    if binary is None or not statements(sql):
        return []
    excluded = ",".join(sorted(ignored))
    command = [
        binary,
        "--reporter",
        "json",
        "--assume-in-transaction",
        "--stdin-filepath",
        "revision.sql",
    ]
    if excluded:
        command += ["--exclude", excluded]
    source = preamble + ";\n\n".join(statements(sql)) + ";\n"
    result = subprocess.run(
        command, input=source, capture_output=True, text=True, timeout=60, check=False
    )
    try:
        reports = json.loads(result.stdout or "[]")
    except json.JSONDecodeError:
        return [
            Finding("squawk-failed", WARNING, _short(result.stderr or result.stdout), "", "squawk")
        ]
    lines = source.splitlines()
    return [
        Finding(
            report.get("rule_name", "squawk"),
            WARNING,
            report.get("message", ""),
            _short(lines[report["line"]] if 0 <= report.get("line", -1) < len(lines) else ""),
            "squawk",
        )
        for report in reports
        if report.get("rule_name") not in ignored
    ]


def squawk_binary() -> str | None:
    """squawk from this interpreter's environment first, then PATH."""
    beside = Path(sys.executable).with_name("squawk")
    return str(beside) if beside.exists() else shutil.which("squawk")


def lint(sql: str, dialect: str, ignored: frozenset[str], preamble: str = "") -> list[Finding]:
    findings = classify(sql, ignored)
    if dialect == "postgresql":
        findings += squawk(sql, ignored, preamble)
    return findings


def _short(text: str, limit: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
