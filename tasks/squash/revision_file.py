"""The baseline revision file, and what the squashed range did that a baseline cannot replay.

The file is self-contained (it imports only Alembic and SQLAlchemy, so plain `alembic` runs it
wherever the old revisions ran): its statements per dialect as data, and a small function that
sends them. Its docstring says where it came from, what it replaced, how it was proven, and which
data migrations and raw SQL of the old range fresh databases no longer run.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.script import Script

    from tasks.squash.baseline import DialectSchema

# Calls in an upgrade() that move data or run SQL the schema alone does not show.
DATA_CALLS = {"execute", "bulk_insert", "get_bind", "inline_literal", "exec_driver_sql", "text"}


@dataclass(frozen=True)
class Finding:
    revision: str
    call: str

    def line(self) -> str:
        return f"{self.revision}: {self.call}"


def data_migrations(revisions: list[Script]) -> list[Finding]:
    """Raw SQL and data changes in the upgrade() of each revision (with the helpers it defines)."""
    found = []
    for revision in revisions:
        tree = ast.parse(Path(revision.path).read_text(encoding="utf-8"))
        functions = [
            node
            for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name != "downgrade"
        ]
        for function in functions:
            for node in ast.walk(function):
                if isinstance(node, ast.Call) and _called_name(node.func) in DATA_CALLS:
                    if _called_name(node.func) == "text" and _inside_execute(function, node):
                        continue  # reported with its execute() already
                    found.append(Finding(revision.revision, _short(ast.unparse(node))))
    return found


def _called_name(function: ast.expr) -> str | None:
    if isinstance(function, ast.Attribute):
        return function.attr
    if isinstance(function, ast.Name):
        return function.id
    return None


def _inside_execute(function: ast.AST, target: ast.Call) -> bool:
    for node in ast.walk(function):
        if (
            isinstance(node, ast.Call)
            and _called_name(node.func) in {"execute", "exec_driver_sql"}
            and node is not target
            and any(inner is target for inner in ast.walk(node))
        ):
            return True
    return False


def _short(text: str, limit: int = 110) -> str:
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 3] + "..."


def render(
    revision: str,
    squashed: list[str],
    schemas: list[DialectSchema],
    *,
    replaces_checksum: str,
    branch_labels: list[str],
    findings: list[Finding],
    forced: list[str],
) -> str:
    """The baseline revision's source."""
    dialects = ", ".join(schema.dialect for schema in schemas)
    doc = [
        f"Squashed baseline: the schema of {len(squashed)} revisions, up to {revision}",
        "",
        f"Revision ID: {revision}",
        "Revises:",
        f"Create Date: {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC",
        "",
        f"Written by `invoke dev.squash -r {revision}` from a database the old chain built, and",
        f"proven before it was written on {dialects}: a database built from this revision",
        "alone has the same tables, columns, types, defaults, indexes, constraints, sequences,",
        "enum types and comments. Databases at or past this revision need nothing: its id is",
        "unchanged.",
        "",
        "Squashed revisions (git history keeps their files):",
        *_wrapped(squashed),
    ]
    if findings:
        doc += [
            "",
            "Not replayed on fresh databases (data migrations and raw SQL of the squashed range):",
            *(f"  - {finding.line()}" for finding in findings),
        ]
    if forced:
        doc += [
            "",
            "WARNING: squashed with --force while these databases were behind it (they are",
            "stranded on revisions that no longer exist):",
            *(f"  - {name}" for name in forced),
        ]
    docstring = "\n".join(doc).replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    labels = repr(tuple(branch_labels)) if branch_labels else "None"
    names = [schema.dialect for schema in schemas]
    return (
        f'"""{docstring}\n"""\n\n'
        "from alembic import op\n\n"
        f"revision = {revision!r}\n"
        "down_revision = None\n"
        f"branch_labels = {labels}\n"
        "depends_on = None\n"
        "# The checksum of the revision this baseline replaced: databases that applied that one\n"
        "# accept this one in its place (tasks/history/checksums.py).\n"
        f"replaces_checksum = {replaces_checksum!r}\n\n\n"
        "def upgrade() -> None:\n"
        f"{_body({schema.dialect: schema.upgrade for schema in schemas}, names)}\n\n\n"
        "def downgrade() -> None:\n"
        f"{_body({schema.dialect: schema.downgrade for schema in schemas}, names)}\n"
    )


def _body(by_dialect: dict[str, list[str]], names: list[str]) -> str:
    """One branch per dialect, each statement a literal `op.execute` (so plan and lint read it
    as SQL); PostgreSQL's statements in one literal, sent as one round trip."""
    lines = ["    dialect = op.get_context().dialect.name"]
    for index, (dialect, statements) in enumerate(by_dialect.items()):
        matches = '("mysql", "mariadb")' if dialect == "mysql" else f"({dialect!r},)"
        lines.append(f"    {'if' if index == 0 else 'elif'} dialect in {matches}:")
        batches = [";\n".join(statements)] if dialect == "postgresql" else statements
        for batch in batches or []:
            lines.append(f"        op.execute({_literal(batch, indent=12)})")
        if not batches:
            lines.append("        pass")
    lines.append("    else:")
    lines.append(
        f'        raise RuntimeError(f"this baseline was built for {", ".join(names)}, not '
        '{dialect}: squash again with migrations.ci.dialects including it")'
    )
    return "\n".join(lines)


def _literal(sql: str, *, indent: int) -> str:
    """A string literal for `sql`: one line, or one implicitly joined piece per line of SQL."""
    pieces = sql.splitlines(keepends=True)
    if len(pieces) <= 1:
        return repr(sql)
    pad = " " * indent
    inner = "\n".join(f"{pad}{piece!r}" for piece in pieces)
    return f"\n{inner}\n{pad[:-4]}"


def _wrapped(ids: list[str], width: int = 88) -> list[str]:
    lines, line = [], ""
    for item in ids:
        candidate = f"{line}, {item}" if line else f"  {item}"
        if len(candidate) > width:
            lines.append(line + ",")
            candidate = f"  {item}"
        line = candidate
    return [*lines, line] if line else lines
