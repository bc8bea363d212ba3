"""Classifying the SQL a revision runs: what loses data, and (on PostgreSQL) what blocks traffic.

Two sources of findings:
- our classifier, for every dialect: statements that drop, retype, rename or tighten
  (destructive) against everything else (ordinary, not reported);
- squawk (the `squawk-cli` package), on PostgreSQL, under its own rule names: lock and rewrite
  hazards (`adding-required-field`, `require-concurrent-index-creation`, ...) are blocking,
  the rest (`ban-drop-column`, which our classifier reports too, `prefer-text-field`) warnings.
Destructive and blocking findings are what a protected upgrade needs consent for.
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

DESTRUCTIVE = "destructive"  # loses data or breaks code still using the old shape
BLOCKING = "blocking"  # takes locks or rewrites that stall traffic on a live table
WARNING = "warning"
# Findings a protected upgrade only applies with --allow-destructive (or typed consent).
NEEDS_CONSENT = frozenset({DESTRUCTIVE, BLOCKING})

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


# Squawk's lock and rewrite hazards. Its drop rules (ban-drop-column, ...) stay warnings: our
# classifier already reports those statements as destructive, on every dialect, and counting
# them twice would double the destructive count. Other rules are advice (prefer-text-field).
SQUAWK_BLOCKING = frozenset(
    {
        "adding-field-with-default",
        "adding-foreign-key-constraint",
        "adding-not-nullable-field",
        "adding-required-field",
        "adding-serial-primary-key-field",
        "ban-alter-domain-with-add-constraint",
        "ban-concurrent-index-creation-in-transaction",
        "changing-column-type",
        "constraint-missing-not-valid",
        "disallowed-unique-constraint",
        "renaming-column",
        "renaming-table",
        "require-concurrent-index-creation",
        "require-concurrent-index-deletion",
    }
)


def squawk(
    sql: str,
    ignored: frozenset[str] = frozenset(),
    preamble: str = "",
    pg_version: str | None = None,
) -> list[Finding]:
    """Squawk's findings for PostgreSQL SQL; an empty list when squawk is not installed.

    Squawk sees the revision's real transaction structure (Alembic's BEGIN/COMMIT per revision,
    and the COMMIT ... BEGIN around an `autocommit_block()`), so CREATE INDEX CONCURRENTLY in
    an autocommit block is judged outside a transaction, as it will run. Ignored rules are
    filtered here rather than passed to `--exclude`, which rejects names squawk does not know
    (ours, such as drop-column) and would then report nothing at all.
    """
    binary = squawk_binary()
    parts = _squawk_statements(sql)
    if binary is None or not any(part.upper() not in {"BEGIN", "COMMIT"} for part in parts):
        return []
    command = [binary, "--reporter", "json", "--stdin-filepath", "revision.sql"]
    if not any(part.upper() == "BEGIN" for part in parts):
        command.append("--assume-in-transaction")  # Alembic runs it inside one
    if pg_version:
        command += ["--pg-version", pg_version]
    lines = preamble.splitlines()
    owner: list[str] = [""] * len(lines)  # the statement each source line belongs to
    for part in parts:
        text = part + ";"
        lines += text.splitlines()
        owner += [part] * len(text.splitlines())
    result = subprocess.run(
        command,
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    try:
        reports = json.loads(result.stdout) if result.returncode in {0, 1} else None
    except json.JSONDecodeError:
        reports = None
    if not isinstance(reports, list):
        problem = _short(result.stderr or result.stdout or f"exit {result.returncode}")
        return [Finding("squawk-failed", WARNING, problem, "", "squawk")]
    findings = []
    for report in reports:
        rule = report.get("rule_name", "squawk")
        if rule in ignored:
            continue
        line = report.get("line", -1)
        statement = owner[line] if 0 <= line < len(owner) else ""
        findings.append(
            Finding(
                rule, _squawk_severity(rule), report.get("message", ""), _short(statement), "squawk"
            )
        )
    return findings


def _squawk_severity(rule: str) -> str:
    return BLOCKING if rule in SQUAWK_BLOCKING else WARNING


def _squawk_statements(sql: str) -> list[str]:
    """Like `statements`, but keeping BEGIN and COMMIT: the transaction structure squawk needs."""
    found = []
    for chunk in re.split(r";\s*\n", sql):
        lines = [line for line in chunk.splitlines() if not line.strip().startswith("--")]
        text = "\n".join(lines).strip()
        if text and not _VERSION_TABLE.search(text):
            found.append(text)
    return found


# Operations in a revision's Python source that lose data, for revisions whose SQL cannot be
# rendered offline: (rule, pattern) over one call or line of the function body.
_SOURCE_RULES: list[tuple[str, re.Pattern[str]]] = [
    (rule, re.compile(pattern, re.S))
    for rule, pattern in [
        ("drop-table", r"\.drop_table\("),
        ("drop-column", r"\.drop_column\("),
        ("drop-index", r"\.drop_index\("),
        ("drop-constraint", r"\.drop_constraint\("),
        ("change-column-type", r"\.alter_column\((?:[^()]|\([^()]*\))*\btype_\s*="),
        ("set-not-null", r"\.alter_column\((?:[^()]|\([^()]*\))*\bnullable\s*=\s*False"),
        ("rename", r"\.rename_table\(|\bnew_column_name\s*="),
        ("raw-sql", r"(?i)[\"']\s*(DROP|TRUNCATE|DELETE\s+FROM|ALTER\s+TABLE\s+\S+\s+DROP)\b"),
    ]
]


def scan_source(source: str, upgrade: bool, ignored: frozenset[str] = frozenset()) -> list[Finding]:
    """Destructive operations in a revision's upgrade() or downgrade() body, read from source.

    The fallback when Alembic cannot render a revision offline (it reads the database while
    migrating): weaker than classifying SQL, but a drop_column hidden behind a SELECT must not
    pass as harmless.
    """
    body = _function_body(source, "upgrade" if upgrade else "downgrade")
    findings = []
    for rule, pattern in _SOURCE_RULES:
        if rule in ignored:
            continue
        for match in pattern.finditer(body):
            line = body[body.rfind("\n", 0, match.start()) + 1 :].split("\n", 1)[0]
            message = "found in the revision's source (its SQL could not be rendered)"
            findings.append(Finding(rule, DESTRUCTIVE, message, _short(line), "source"))
    return findings


def _function_body(source: str, name: str) -> str:
    """The text of top-level `def name(...)` up to the next top-level statement."""
    match = re.search(rf"^def\s+{name}\s*\(.*?(?=^\S)", source + "\n#", re.M | re.S)
    return match.group(0) if match else ""


def squawk_binary() -> str | None:
    """squawk from this interpreter's environment first, then PATH."""
    beside = Path(sys.executable).with_name("squawk")
    return str(beside) if beside.exists() else shutil.which("squawk")


def lint(
    sql: str,
    dialect: str,
    ignored: frozenset[str],
    preamble: str = "",
    pg_version: str | None = None,
) -> list[Finding]:
    """Our classifier on every dialect, squawk as well on PostgreSQL."""
    findings = classify(sql, ignored)
    if dialect == "postgresql":
        findings += squawk(sql, ignored, preamble, pg_version)
    return findings


def _short(text: str, limit: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
