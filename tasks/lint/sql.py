"""SQL text to findings: split by the dialect's tokenizer, each statement judged by its dialect.

`split` never loses text (a chunk the parser rejects is reported, not skipped); `classify` walks
a revision's statements in order with one `Catalog`, so what an earlier statement created or
validated is known to the later ones.
"""

from __future__ import annotations

import re
from typing import Any

from tasks.lint import mysql, postgres, postgres_alter
from tasks.lint.findings import VERSION_TABLE, Catalog, Finding, Statement, Verdict
from tasks.lint.rules import Rule, help_for, hit


def split(sql: str, dialect: str, schema: str | None = None) -> list[Statement]:
    """The statements of `sql` in order, split by the dialect's own tokenizer; `schema` is the
    version table's (the environment's schema, None for the connection's default)."""
    texts = _pg_split(sql) if dialect == "postgresql" else _glot_split(sql, dialect)
    return [Statement(text, is_bookkeeping(text, dialect, schema)) for text in texts]


def statements(sql: str, dialect: str = "postgresql", schema: str | None = None) -> list[str]:
    """The revision's own statements (no BEGIN/COMMIT, no alembic_version bookkeeping)."""
    return [item.text for item in split(sql, dialect, schema) if not item.bookkeeping]


def _pg_split(sql: str) -> list[str]:
    """Split on top-level `;` tokens of PostgreSQL's scanner (and on a `;` a trailing line comment
    swallowed); comments at the edges dropped.

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
        if token is None or token.name == "ASCII_59" or _swallowed_terminator(token, data):
            real = [t for t in current if t.name not in {"SQL_COMMENT", "C_COMMENT"}]
            if real:
                chunks.append(data[real[0].start : real[-1].end + 1].decode("utf-8"))
            current = []
        else:
            current.append(token)
    return chunks


def _swallowed_terminator(token: Any, data: bytes) -> bool:
    """A line comment ending in `;`: in Alembic's offline rendering, the terminator written after
    an `op.execute` whose SQL ends in `-- comment`. The next statement is its own, not the rest
    of this one (`SELECT 1 -- c;` then `DELETE FROM t` would read as `SELECT 1 AS delete ...`)."""
    return token.name == "SQL_COMMENT" and data[token.start : token.end + 1].rstrip().endswith(b";")


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


def is_bookkeeping(text: str, dialect: str, schema: str | None = None) -> bool:
    """BEGIN/COMMIT and statements on Alembic's version table, judged by the parser.

    The version table is the configured one: `alembic_version` unqualified, or qualified with
    the environment's `schema`; a table of that name in any other schema is the revision's own.
    """
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
            return (
                relation.relname == VERSION_TABLE
                and relation.schemaname in {None, schema}
                and not postgres.nested(node)
            )
        return kind == "DropStmt" and postgres.drop_names(node, qualified=True) in (
            [VERSION_TABLE],
            [f"{schema}.{VERSION_TABLE}"],
        )
    tree = mysql.parse(text, dialect)
    if tree is None:
        return False
    from sqlglot import exp

    if isinstance(tree, (exp.Transaction, exp.Commit)):
        return True
    if isinstance(tree, (exp.Insert, exp.Update, exp.Delete, exp.Create, exp.Drop)):
        target = tree.find(exp.Table)
        return (
            target is not None
            and target.name == VERSION_TABLE
            and (target.db or None) in {None, schema}
            and not mysql.nested(tree)
        )
    return False


# --- the classifier ----------------------------------------------------------------------


def classify(
    sql: str,
    dialect: str = "postgresql",
    ignored: frozenset[str] = frozenset(),
    catalog: Catalog | None = None,
    schema: str | None = None,
) -> list[Finding]:
    """What in `sql` needs consent, one finding per statement and rule, in statement order."""
    catalog = catalog if catalog is not None else Catalog()
    catalog.new_revision()
    parts = split(sql, dialect, schema)
    seed_catalog(catalog, parts, dialect)
    findings: list[Finding] = []
    for part in parts:
        if part.bookkeeping:
            if dialect == "postgresql" and postgres.transaction_kind(part.text):
                catalog.transaction(postgres.transaction_kind(part.text))
            continue
        findings += _judged(part.text, dialect, ignored, catalog)
    return findings


def seed_catalog(catalog: Catalog, parts: list[Statement], dialect: str) -> None:
    """What the classifier learns from a revision's statements before judging the first one:
    the checks of the validated NOT NULL pattern it adds, the tables SQLite batch mode rebuilds."""
    catalog.rebuilt |= mysql.batch_rebuilt(parts, dialect)
    if dialect == "postgresql":
        catalog.not_null_checks_added |= postgres_alter.not_null_checks_added(parts)
        catalog.constraints_added |= postgres_alter.constraints_added(parts)


def classify_live(
    sql: str,
    dialect: str,
    ignored: frozenset[str],
    catalog: Catalog,
    schema: str | None = None,
) -> list[Finding]:
    """One statement as a driver is about to send it (the statement guard): judged like the
    plan's, with `catalog` carried over from the revision's earlier statements. Transaction
    control sent as a statement is the revision's own (the tasks' transactions are the
    driver's), except SQLite's BEGIN, which SQLAlchemy sends for the tasks."""
    findings: list[Finding] = []
    for part in split(sql, dialect, schema):
        if part.bookkeeping:
            kind = _transaction_kind(part.text, dialect)
            if kind and not (dialect == "sqlite" and kind == "BEGIN"):
                message = f"{kind}: transaction control inside a revision (Alembic runs it in one)"
                verdict = [hit(Rule.TRANSACTION_CONTROL, message, kind.lower())]
                findings += _findings(verdict, part.text, ignored)
            continue
        findings += _judged(part.text, dialect, ignored, catalog)
    return findings


def _transaction_kind(text: str, dialect: str) -> str:
    if dialect == "postgresql":
        return postgres.transaction_kind(text)
    tree = mysql.parse(text, dialect)
    from sqlglot import exp

    if isinstance(tree, exp.Transaction):
        return "BEGIN"
    if isinstance(tree, exp.Commit):
        return "COMMIT"
    if isinstance(tree, exp.Rollback):
        return "ROLLBACK"
    return ""


def _judged(text: str, dialect: str, ignored: frozenset[str], catalog: Catalog) -> list[Finding]:
    if dialect == "postgresql":
        verdict = postgres.judge(text, catalog)
    else:
        verdict = mysql.judge(text, dialect, catalog, catalog.rebuilt)
    return _findings(verdict, text, ignored)


def _findings(verdict: Verdict, text: str, ignored: frozenset[str]) -> list[Finding]:
    """One finding per rule of a statement's verdict, ignored rules left out."""
    findings: list[Finding] = []
    seen: set[str] = set()
    for rule, severity, message, subject in verdict:
        if rule in ignored or rule in seen:
            continue
        seen.add(rule)
        findings.append(
            Finding(rule, severity, message, text, help=help_for(rule), subject=subject)
        )
    return findings
