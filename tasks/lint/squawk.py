"""Squawk, PostgreSQL's migration linter, run beside our classifier and merged into its findings.

Squawk's names for the hazards we judge are folded into ours (`SQUAWK_ALIASES`), keeping squawk's
`help`; where our classifier proved a statement safe with knowledge squawk lacks (a validated
check before SET NOT NULL, a widened varchar) squawk's finding is dropped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from tasks.lint import postgres
from tasks.lint.findings import Finding, Statement
from tasks.lint.rules import BLOCKING, RANK, RULES, WARNING, Rule
from tasks.lint.sql import split

# Lock and rewrite hazards: squawk's finding for one of these is blocking, anything else a warning.
SQUAWK_BLOCKING = frozenset(rule for rule, spec in RULES.items() if spec.severity == BLOCKING)
# Squawk's names for hazards our classifier judges, mapped onto ours: one finding per statement.
SQUAWK_ALIASES = {
    "ban-drop-column": Rule.DROP_COLUMN,
    "ban-drop-table": Rule.DROP_TABLE,
    "ban-drop-database": Rule.DROP_OBJECT,
    "ban-truncate-cascade": Rule.TRUNCATE,
    Rule.CHANGING_COLUMN_TYPE: Rule.CHANGE_COLUMN_TYPE,
    Rule.ADDING_NOT_NULLABLE_FIELD: Rule.SET_NOT_NULL,
    Rule.REQUIRE_CONCURRENT_INDEX_DELETION: Rule.DROP_INDEX,
    Rule.RENAMING_COLUMN: Rule.RENAME,
    Rule.RENAMING_TABLE: Rule.RENAME,
    "syntax-error": Rule.UNPARSABLE,
}
# Rules our classifier decides with the parse tree and the catalog (what squawk cannot see:
# the column's current type, a check validated earlier): squawk's word on them is merged in
# where we agree and dropped where we proved the statement safe.
JUDGED = frozenset(
    {
        *SQUAWK_ALIASES.values(),
        Rule.REQUIRE_CONCURRENT_INDEX_CREATION,
        Rule.ADDING_REQUIRED_FIELD,
        Rule.ADDING_FIELD_WITH_DEFAULT,
        Rule.ADDING_FOREIGN_KEY_CONSTRAINT,
        Rule.CONSTRAINT_MISSING_NOT_VALID,
        Rule.DISALLOWED_UNIQUE_CONSTRAINT,
        Rule.ADDING_SERIAL_PRIMARY_KEY_FIELD,
    }
)


@dataclass(frozen=True)
class SquawkReport:
    rule: str
    message: str
    help: str
    statement: str  # the statement's text exactly as our splitter gave it, "" if unknown


def reports(
    sql: str, preamble: str = "", pg_version: str | None = None
) -> list[SquawkReport] | Finding:
    """Run squawk over the statements; [] when squawk is not installed, a Finding on failure.

    Squawk sees the revision's real transaction structure (Alembic's BEGIN/COMMIT per revision,
    and the COMMIT ... BEGIN around an `autocommit_block()`), so CREATE INDEX CONCURRENTLY in
    an autocommit block is judged outside a transaction, as it will run. Ignored rules are
    filtered by the caller rather than passed to `--exclude`, which rejects names squawk does
    not know (ours, such as drop-column) and would then report nothing at all.
    """
    binary = squawk_binary()
    parts = [part for part in split(sql, "postgresql") if _squawk_sees(part)]
    if binary is None or all(postgres.is_transaction(part.text) for part in parts):
        return []
    command = [binary, "--reporter", "json", "--stdin-filepath", "revision.sql"]
    if not any(postgres.transaction_kind(part.text) == "BEGIN" for part in parts):
        command.append("--assume-in-transaction")  # Alembic runs it inside one
    if pg_version:
        command += ["--pg-version", pg_version]
    lines = preamble.splitlines()
    owner: list[str] = [""] * len(lines)  # the statement each source line belongs to
    for part in parts:
        text = part.text + ";"
        lines += text.splitlines()
        owner += [part.text] * len(text.splitlines())
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
        problem = " ".join((result.stderr or result.stdout or f"exit {result.returncode}").split())
        return Finding(Rule.SQUAWK_FAILED, WARNING, problem[:300], "", "squawk")
    found = []
    for report in reports:
        line = report.get("line", -1)
        statement = owner[line] if isinstance(line, int) and 0 <= line < len(owner) else ""
        found.append(
            SquawkReport(
                str(report.get("rule_name", "squawk")),
                str(report.get("message", "")),
                " ".join(str(report.get("help") or "").split()),
                statement,
            )
        )
    return found


def _is_type_change(text: str) -> bool:
    """ALTER TABLE ... ALTER COLUMN ... TYPE: squawk's varchar advice there is about the lock
    a size change takes, which our classifier judges from the column's current type."""
    from pglast.enums import AlterTableType

    node = postgres.parse(text)
    commands = getattr(node, "cmds", None) or ()
    return type(node).__name__ == "AlterTableStmt" and all(
        command.subtype == AlterTableType.AT_AlterColumnType for command in commands
    )


def _squawk_sees(part: Statement) -> bool:
    """Squawk needs BEGIN/COMMIT (transaction structure) but not alembic_version."""
    return not part.bookkeeping or postgres.is_transaction(part.text)


def _squawk_severity(rule: str) -> str:
    return BLOCKING if rule in SQUAWK_BLOCKING else WARNING


def merge(
    ours: list[Finding], reports: list[SquawkReport], ignored: frozenset[str]
) -> list[Finding]:
    """Our findings and squawk's, one per statement and rule, in statement order.

    A squawk rule we judge is folded into our finding for the same statement (squawk's help
    kept, the graver severity wins) or dropped where our classifier found the statement safe;
    squawk's other rules are kept once per statement.
    """
    merged = list(ours)
    position = {(finding.statement, finding.rule): index for index, finding in enumerate(merged)}
    for report in reports:
        rule = SQUAWK_ALIASES.get(report.rule, report.rule)
        if report.rule in ignored or rule in ignored:
            continue
        key = (report.statement, rule)
        if key in position:
            index = position[key]
            mine = merged[index]
            if mine.source == "squawk":
                continue  # squawk said it twice (two VARCHAR columns, one statement)
            severity = max(mine.severity, _squawk_severity(report.rule), key=RANK.__getitem__)
            merged[index] = replace(
                mine,
                severity=severity,
                source="classifier+squawk",
                help=report.help or mine.help,
            )
            continue
        if rule in JUDGED and report.statement:
            continue  # we parsed this statement and proved this hazard absent
        if report.rule == "prefer-text-field" and _is_type_change(report.statement):
            continue  # a widening we proved rewrites nothing (narrowing is reported as ours)
        finding = Finding(
            report.rule,
            _squawk_severity(report.rule),
            report.message,
            report.statement,
            "squawk",
            report.help,
        )
        position[key] = len(merged)
        merged.append(finding)
    order = {text: index for index, text in enumerate(dict.fromkeys(f.statement for f in ours))}
    return sorted(merged, key=lambda finding: order.get(finding.statement, len(order)))


def squawk_binary() -> str | None:
    """squawk from this interpreter's environment first, then PATH."""
    beside = Path(sys.executable).with_name("squawk")
    return str(beside) if beside.exists() else shutil.which("squawk")
