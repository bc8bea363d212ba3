"""SQL text to findings: split by the dialect's tokenizer, each statement judged by its dialect.

`split` never loses text (a chunk the parser rejects is reported, not skipped); `classify` walks
a revision's statements in order with one `Catalog`, so what an earlier statement created or
validated is known to the later ones.
"""

from __future__ import annotations

import re
from typing import Any

from tasks.lint import mysql, postgres, postgres_alter
from tasks.lint.findings import VERSION_TABLE, Catalog, Finding, Statement
from tasks.lint.rules import help_for


def split(sql: str, dialect: str) -> list[Statement]:
    """The statements of `sql` in order, split by the dialect's own tokenizer."""
    texts = _pg_split(sql) if dialect == "postgresql" else _glot_split(sql, dialect)
    return [Statement(text, is_bookkeeping(text, dialect)) for text in texts]


def statements(sql: str, dialect: str = "postgresql") -> list[str]:
    """The revision's own statements (no BEGIN/COMMIT, no alembic_version bookkeeping)."""
    return [item.text for item in split(sql, dialect) if not item.bookkeeping]


def _pg_split(sql: str) -> list[str]:
    """Split on top-level `;` tokens of PostgreSQL's scanner; comments at the edges dropped.

    `pglast.split` without the parser silently drops text it cannot scan into a statement,
    so the scanner's tokens are grouped here instead: nothing is ever lost, and a chunk the
    parser later rejects is reported, not skipped.
    """
    from pglast.parser import scan

    data = sql.encode("utf-8")
    try:
        tokens = scan(sql)
    except Exception:  # unscannable (an unterminated quote): the whole text is one statement
        return [sql.strip()] if sql.strip() else []
    chunks: list[str] = []
    current: list[Any] = []
    for token in [*tokens, None]:
        if token is None or token.name == "ASCII_59":
            real = [t for t in current if t.name not in {"SQL_COMMENT", "C_COMMENT"}]
            if real:
                chunks.append(data[real[0].start : real[-1].end + 1].decode("utf-8"))
            current = []
        else:
            current.append(token)
    return chunks


def _glot_split(sql: str, dialect: str) -> list[str]:
    """Split on `;` tokens of sqlglot's tokenizer for the dialect.

    A MySQL "executable comment" (`/*! ... */`, MariaDB's `/*M! ... */`) is run by the server
    although it looks like a comment: a chunk holding one is kept whole, comments included,
    so the classifier sees and refuses it.
    """
    import sqlglot
    from sqlglot.tokens import TokenType

    try:
        tokens = sqlglot.Dialect.get_or_raise(mysql.GLOT.get(dialect, dialect)).tokenize(sql)
    except Exception:
        return [sql.strip()] if sql.strip() else []
    is_mysql = mysql.GLOT.get(dialect, dialect) == "mysql"
    chunks: list[str] = []
    begin = 0
    current: list[Any] = []
    carried = False  # an executable comment after the previous `;` belongs to this chunk
    for token in [*tokens, None]:
        if token is None or token.token_type == TokenType.SEMICOLON:
            end = len(sql) if token is None else token.start
            raw = sql[begin:end]
            marks = [*current, *([token] if token is not None else [])]
            hidden = is_mysql and (
                carried
                or any(mysql.executable_comment(t.comments) for t in marks)
                or (not current and re.search(r"/\*M?!", raw) is not None)  # only comments
            )
            if hidden and raw.strip():
                chunks.append(raw.strip())
            elif current:
                chunks.append(sql[current[0].start : current[-1].end + 1])
            carried = is_mysql and token is not None and mysql.executable_comment(token.comments)
            current = []
            begin = end + 1
        else:
            current.append(token)
    return chunks


def is_bookkeeping(text: str, dialect: str) -> bool:
    """BEGIN/COMMIT and statements on Alembic's version table, judged by the parser."""
    if dialect == "postgresql":
        node = postgres.parse(text)
        if node is None:
            return False
        kind = type(node).__name__
        if kind == "TransactionStmt":
            return True
        relation = getattr(node, "relation", None)
        if kind in {"InsertStmt", "UpdateStmt", "DeleteStmt", "CreateStmt"} and relation:
            # Nothing may ride along: a DELETE in a CTE of an INSERT INTO alembic_version.
            return relation.relname == VERSION_TABLE and not postgres.nested(node)
        return kind == "DropStmt" and postgres.drop_names(node) == [VERSION_TABLE]
    tree = mysql.parse(text, dialect)
    if tree is None:
        return False
    from sqlglot import exp

    if isinstance(tree, (exp.Transaction, exp.Commit)):
        return True
    if isinstance(tree, (exp.Insert, exp.Update, exp.Delete, exp.Create, exp.Drop)):
        target = tree.find(exp.Table)
        return target is not None and target.name == VERSION_TABLE and not mysql.nested(tree)
    return False


# --- the classifier ----------------------------------------------------------------------


def classify(
    sql: str,
    dialect: str = "postgresql",
    ignored: frozenset[str] = frozenset(),
    catalog: Catalog | None = None,
) -> list[Finding]:
    """What in `sql` needs consent, one finding per statement and rule, in statement order."""
    catalog = catalog if catalog is not None else Catalog()
    catalog.new_revision()
    parts = split(sql, dialect)
    rebuilt = mysql.batch_rebuilt(parts, dialect)
    if dialect == "postgresql":
        catalog.not_null_checks_added |= postgres_alter.not_null_checks_added(parts)
    findings: list[Finding] = []
    for part in parts:
        if part.bookkeeping:
            if dialect == "postgresql" and postgres.transaction_kind(part.text):
                catalog.transaction(postgres.transaction_kind(part.text))
            continue
        if dialect == "postgresql":
            verdict = postgres.judge(part.text, catalog)
        else:
            verdict = mysql.judge(part.text, dialect, catalog, rebuilt)
        seen: set[str] = set()
        for rule, severity, message, subject in verdict:
            if rule in ignored or rule in seen:
                continue
            seen.add(rule)
            findings.append(
                Finding(rule, severity, message, part.text, help=help_for(rule), subject=subject)
            )
    return findings
