"""Classifying the SQL a revision runs: what needs a human's consent, and why.

The classifier fails closed. Each statement is split and parsed by a parser made for its
dialect (PostgreSQL's own grammar through `pglast`; `sqlglot` for MySQL/MariaDB and SQLite),
never by regular expressions, and passes without consent only when it parsed and is of a kind
known to be safe (the allow-list in `_pg_statement` / `_glot_statement`). Everything else
needs consent and says why: what is destructive (drops, retypes, renames, deletes, NOT NULL
without the validated-check pattern), what blocks traffic on PostgreSQL (an index built
without CONCURRENTLY, a constraint validated under an exclusive lock), and whatever cannot be
known statically (unparsable text, `DO` blocks, dynamic SQL, calls of unknown functions,
unknown statement kinds). Those last ones are reported as destructive: not knowing is not safe.

Decisions worth knowing:
- INSERT adds rows and is safe; UPDATE is safe only as a backfill (every column it sets is
  tested `IS NULL` in its WHERE), since any other UPDATE overwrites values nobody can get
  back; DELETE, TRUNCATE and MERGE always need consent.
- DROP INDEX CONCURRENTLY is safe: an index holds no data, and it takes no blocking lock.
- A statement on a table created earlier in the same SQL (a new, empty table) needs no
  CONCURRENTLY, NOT VALID or validated check.
- Widening `varchar(n)` (to a larger n, unbounded varchar or text) is safe when the column's
  current type is known, from earlier statements or from the `Catalog`'s lookup (the live
  database); an unknown current type is a type change, which needs consent.
- CREATE TABLE IF NOT EXISTS may do nothing: it marks no table new and teaches no column type.
- Session settings pass only from a short allow-list (timeouts, messages, memory, character
  set); a timeout set to 0 switches the run's guard off, and RESET undoes it: both need consent.
  MariaDB's ALTER TABLE options pass only in their online forms (no ENGINE=, no COPY/LOCK).

On PostgreSQL squawk runs as well; its findings are merged with ours into one finding per
statement and rule (`SQUAWK_ALIASES` maps squawk's names for the hazards we judge onto ours,
keeping squawk's `help`), and the hazards our classifier judges safe with knowledge squawk
lacks (a validated check before SET NOT NULL, a widened varchar) are not reported twice or
wrongly. Rules named in `migrations.lint.ignore` are dropped from both.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeGuard

DESTRUCTIVE = "destructive"  # loses data, breaks code using the old shape, or cannot be known
BLOCKING = "blocking"  # takes locks or rewrites that stall traffic on a live table
WARNING = "warning"
# Findings a protected upgrade only applies with --allow-destructive (or typed consent).
NEEDS_CONSENT = frozenset({DESTRUCTIVE, BLOCKING})
_RANK = {WARNING: 0, BLOCKING: 1, DESTRUCTIVE: 2}

VERSION_TABLE = "alembic_version"  # Alembic's bookkeeping, not the revision's own work
_BATCH_PREFIX = "_alembic_tmp_"


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    message: str
    statement: str
    source: str = "classifier"
    help: str = ""  # how to do it safely (squawk's advice, or ours)
    subject: str = ""  # what it touches, for the summary line: "drop column users.legacy"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class Statement:
    """One statement as written (comments around it dropped, inside it kept)."""

    text: str
    bookkeeping: bool = False  # BEGIN/COMMIT, alembic_version: shown, never judged


@dataclass
class Catalog:
    """What the classifier knows about the schema while it reads a plan, statement by statement.

    `lookup(table, column)` answers for columns the SQL itself never defined (the live
    database, reflected on demand); None means unknown, and unknown is never safe.
    """

    lookup: Callable[[str, str], str | None] | None = None
    created: set[str] = field(default_factory=set)  # tables created in this revision
    types: dict[tuple[str, str], str] = field(default_factory=dict)  # "varchar(50)", "text"
    checks: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (table, col)
    validated: set[tuple[str, str]] = field(default_factory=set)  # NOT NULL proven by a check
    not_null: set[tuple[str, str]] = field(default_factory=set)  # SET NOT NULL seen
    # Names this revision adds as `CHECK (col IS NOT NULL)` checks: a `DROP CONSTRAINT IF
    # EXISTS` of one of them clears a leftover of the same pattern from a failed earlier run.
    not_null_checks_added: set[tuple[str, str]] = field(default_factory=set)
    # Tables an ALTER TABLE locked (ACCESS EXCLUSIVE) in the open transaction: the lock is held
    # until COMMIT, so a VALIDATE after it in the same transaction scans under that lock.
    locked: set[str] = field(default_factory=set)
    # Columns this revision added to existing tables: an UPDATE that sets only these fills
    # them in (a backfill), it overwrites nobody's data.
    added: set[tuple[str, str]] = field(default_factory=set)
    in_transaction: bool = True  # Alembic runs a revision in one, unless the SQL says otherwise

    def column_type(self, table: str, column: str) -> str | None:
        known = self.types.get((table, column))
        if known is None and self.lookup is not None:
            try:
                known = self.lookup(table, column)
            except Exception:  # reflection failed: the type stays unknown (never safe)
                known = None
        return known

    def new_revision(self) -> None:
        """Tables created by an earlier revision are no longer "new" (they may be filled)."""
        self.created.clear()
        self.added.clear()
        self.not_null_checks_added.clear()
        self.locked.clear()
        self.in_transaction = True

    def transaction(self, kind: str) -> None:
        """BEGIN opens a transaction; COMMIT/ROLLBACK end it and release its locks."""
        self.locked.clear()
        self.in_transaction = kind in {"BEGIN", "START"}


# --- splitting ---------------------------------------------------------------------------


def split(sql: str, dialect: str) -> list[Statement]:
    """The statements of `sql` in order, split by the dialect's own tokenizer."""
    texts = _pg_split(sql) if dialect == "postgresql" else _glot_split(sql, dialect)
    return [Statement(text, _is_bookkeeping(text, dialect)) for text in texts]


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
        tokens = sqlglot.Dialect.get_or_raise(_GLOT.get(dialect, dialect)).tokenize(sql)
    except Exception:
        return [sql.strip()] if sql.strip() else []
    mysql = _GLOT.get(dialect, dialect) == "mysql"
    chunks: list[str] = []
    begin = 0
    current: list[Any] = []
    carried = False  # an executable comment after the previous `;` belongs to this chunk
    for token in [*tokens, None]:
        if token is None or token.token_type == TokenType.SEMICOLON:
            end = len(sql) if token is None else token.start
            raw = sql[begin:end]
            marks = [*current, *([token] if token is not None else [])]
            hidden = mysql and (
                carried
                or any(_executable(t.comments) for t in marks)
                or (not current and re.search(r"/\*M?!", raw) is not None)  # only comments
            )
            if hidden and raw.strip():
                chunks.append(raw.strip())
            elif current:
                chunks.append(sql[current[0].start : current[-1].end + 1])
            carried = mysql and token is not None and _executable(token.comments)
            current = []
            begin = end + 1
        else:
            current.append(token)
    return chunks


def _executable(comments: list[str] | None) -> bool:
    """Whether sqlglot's comment texts include a MySQL/MariaDB executable comment."""
    return any(comment.lstrip().startswith(("!", "M!")) for comment in comments or ())


_GLOT = {"mysql": "mysql", "mariadb": "mysql", "sqlite": "sqlite"}
_DIALECT_NAMES = {"mysql": "MySQL", "mariadb": "MariaDB", "sqlite": "SQLite"}


def _is_bookkeeping(text: str, dialect: str) -> bool:
    """BEGIN/COMMIT and statements on Alembic's version table, judged by the parser."""
    if dialect == "postgresql":
        node = _pg_parse(text)
        if node is None:
            return False
        kind = type(node).__name__
        if kind == "TransactionStmt":
            return True
        relation = getattr(node, "relation", None)
        if kind in {"InsertStmt", "UpdateStmt", "DeleteStmt", "CreateStmt"} and relation:
            # Nothing may ride along: a DELETE in a CTE of an INSERT INTO alembic_version.
            return relation.relname == VERSION_TABLE and not _pg_nested(node)
        return kind == "DropStmt" and _pg_drop_names(node) == [VERSION_TABLE]
    tree = _glot_parse(text, dialect)
    if tree is None:
        return False
    from sqlglot import exp

    if isinstance(tree, (exp.Transaction, exp.Commit)):
        return True
    if isinstance(tree, (exp.Insert, exp.Update, exp.Delete, exp.Create, exp.Drop)):
        target = tree.find(exp.Table)
        return target is not None and target.name == VERSION_TABLE and not _glot_nested(tree)
    return False


# --- the classifier ----------------------------------------------------------------------

# (rule, severity, message, subject) for one statement; an empty list means known safe.
Verdict = list[tuple[str, str, str, str]]


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
    rebuilt = _batch_rebuilt(parts, dialect)
    if dialect == "postgresql":
        catalog.not_null_checks_added |= _pg_not_null_checks_added(parts)
    findings: list[Finding] = []
    for part in parts:
        if part.bookkeeping:
            if dialect == "postgresql" and _pg_kind(part.text):
                catalog.transaction(_pg_kind(part.text))
            continue
        if dialect == "postgresql":
            verdict = _pg_judge(part.text, catalog)
        else:
            verdict = _glot_judge(part.text, dialect, catalog, rebuilt)
        seen: set[str] = set()
        for rule, severity, message, subject in verdict:
            if rule in ignored or rule in seen:
                continue
            seen.add(rule)
            findings.append(
                Finding(
                    rule, severity, message, part.text, help=_HELP.get(rule, ""), subject=subject
                )
            )
    return findings


_HELP = {
    "drop-column": "Stop using the column in the code first; drop it in a later release.",
    "drop-table": "Stop using the table in the code first; drop it in a later release.",
    "require-concurrent-index-creation": "CREATE INDEX CONCURRENTLY, outside a transaction "
    "(op.get_context().autocommit_block()).",
    "set-not-null": "ADD CONSTRAINT ... CHECK (col IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT, "
    "then SET NOT NULL (PostgreSQL 12+ skips the scan) and drop the check.",
    "adding-foreign-key-constraint": "Add it NOT VALID, then VALIDATE CONSTRAINT in a separate "
    "step.",
    "constraint-missing-not-valid": "Add it NOT VALID, then VALIDATE CONSTRAINT in a separate "
    "step.",
    "disallowed-unique-constraint": "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... "
    "UNIQUE USING INDEX.",
    "update-rows": "A backfill that only fills NULLs (WHERE col IS NULL) passes without consent.",
}


def _unparsable(dialect: str) -> Verdict:
    return [("unparsable", DESTRUCTIVE, f"could not be parsed as {dialect} SQL", "unparsable SQL")]


def _unknown(kind: str) -> tuple[str, str, str, str]:
    message = f"{kind}: not a statement kind known to be safe"
    return ("unknown-statement", DESTRUCTIVE, message, kind)


def _batch_rebuilt(parts: list[Statement], dialect: str) -> set[str]:
    """Tables rebuilt by SQLite batch mode: `ALTER TABLE _alembic_tmp_x RENAME TO x`."""
    if dialect == "postgresql":
        return set()
    from sqlglot import exp

    found = set()
    for part in parts:
        tree = _glot_parse(part.text, dialect)
        if isinstance(tree, exp.Alter):
            source = tree.this.name if tree.this is not None else ""
            for action in tree.args.get("actions") or []:
                if isinstance(action, exp.AlterRename) and source.startswith(_BATCH_PREFIX):
                    found.add(action.this.name.lower())
    return found


# --- PostgreSQL (pglast) -----------------------------------------------------------------


def _pg_parse(text: str) -> Any | None:
    """The one statement in `text`, or None when it does not parse or is not exactly one."""
    from pglast import parse_sql

    try:
        parsed = parse_sql(text)
    except Exception:
        return None
    return parsed[0].stmt if len(parsed) == 1 else None


def _pg_judge(text: str, catalog: Catalog) -> Verdict:
    node = _pg_parse(text)
    if node is None:
        return _unparsable("PostgreSQL")
    verdict = _pg_statement(node, catalog)
    return verdict + [item for item in _pg_nested(node) if item not in verdict]


# Settings a migration may change for its own session without consent: the timeouts (which
# only make it give up sooner), messages and memory. Anything else can change what later
# statements mean or where they write (search_path, timezone, session_replication_role, ...).
_SAFE_SETTINGS = frozenset(
    {
        "lock_timeout",
        "statement_timeout",
        "idle_in_transaction_session_timeout",
        "application_name",
        "client_min_messages",
        "check_function_bodies",
        "maintenance_work_mem",
        "work_mem",
    }
)
# The guards a run sets for its session: 0 means "no limit", which switches the guard off.
_TIMEOUT_SETTINGS = frozenset(
    {"lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout"}
)
# Functions known not to write: reading, formatting, generating values.
_SAFE_FUNCTIONS = frozenset(
    {
        "now",
        "coalesce",
        "lower",
        "upper",
        "length",
        "trim",
        "btrim",
        "ltrim",
        "rtrim",
        "concat",
        "concat_ws",
        "substring",
        "substr",
        "replace",
        "left",
        "right",
        "to_char",
        "to_date",
        "to_timestamp",
        "date_trunc",
        "extract",
        "count",
        "max",
        "min",
        "sum",
        "avg",
        "abs",
        "round",
        "floor",
        "ceil",
        "greatest",
        "least",
        "nullif",
        "gen_random_uuid",
        "uuid_generate_v4",
        "md5",
        "json_build_object",
        "jsonb_build_object",
        "to_json",
        "to_jsonb",
        "array_agg",
        "string_agg",
        "timezone",
        "current_setting",
        "random",
        "clock_timestamp",
        "statement_timestamp",
        "transaction_timestamp",
        "nextval",
        "currval",
        "row_number",
        "generate_series",
        "unnest",
        "jsonb_array_elements",
        "json_array_elements",
        "array_length",
        "cardinality",
        "format",
        "quote_ident",
        "quote_literal",
        "split_part",
        "regexp_replace",
        "position",
        "char_length",
        "octet_length",
        "make_interval",
        "age",
        "date_part",
        "bool_or",
        "bool_and",
    }
)
# Defaults that make ADD COLUMN rewrite (or fill row by row) an existing table.
_VOLATILE_DEFAULTS = frozenset(
    {"random", "clock_timestamp", "gen_random_uuid", "uuid_generate_v4", "nextval", "timeofday"}
)


def _pg_statement(node: Any, catalog: Catalog) -> Verdict:
    """The allow-list: what is known safe returns []; anything not listed needs consent."""
    kind = type(node).__name__
    handler = _PG_HANDLERS.get(kind)
    if handler is not None:
        return handler(node, catalog)
    if kind in _PG_ALWAYS_SAFE:
        return []
    return [_unknown(_pg_kind_name(node))]


_PG_ALWAYS_SAFE = frozenset(
    {
        "TransactionStmt",
        "CommentStmt",
        "CreateSeqStmt",
        "CreateEnumStmt",
        "CompositeTypeStmt",
        "CreateDomainStmt",
        "CreateSchemaStmt",
        "VariableShowStmt",
        "GrantRoleStmt",
        "LockStmt",
        "CreateStatsStmt",
    }
)


def _pg_kind_name(node: Any) -> str:
    """`DoStmt` -> "DO", `CreateTrigStmt` -> "CREATE TRIG" (for messages)."""
    name = type(node).__name__.removesuffix("Stmt")
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).upper()


def _relname(relation: Any) -> str:
    return relation.relname if relation is not None else ""


def _pg_drop_names(node: Any) -> list[str]:
    names = []
    for item in node.objects or ():
        parts = item if isinstance(item, tuple) else (item,)
        last = parts[-1]
        names.append(getattr(last, "sval", None) or str(last))
    return names


def _pg_drop(node: Any, _catalog: Catalog) -> Verdict:
    from pglast.enums import ObjectType

    names = ", ".join(_pg_drop_names(node))
    kind = node.removeType
    if kind == ObjectType.OBJECT_INDEX and node.concurrent:
        return []  # no data, no blocking lock
    if kind == ObjectType.OBJECT_TABLE:
        return [
            ("drop-table", DESTRUCTIVE, "drops a table and all its rows", f"drop table {names}")
        ]
    if kind == ObjectType.OBJECT_INDEX:
        message = "drops an index under an ACCESS EXCLUSIVE lock (DROP INDEX CONCURRENTLY does not)"
        return [("drop-index", DESTRUCTIVE, message, f"drop index {names}")]
    what = kind.name.removeprefix("OBJECT_").lower().replace("_", " ")
    rule = "drop-type" if kind == ObjectType.OBJECT_TYPE else "drop-object"
    return [(rule, DESTRUCTIVE, f"drops a {what}", f"drop {what} {names}")]


def _pg_create_table(node: Any, catalog: Catalog) -> Verdict:
    if node.if_not_exists and node.partbound is None:
        return []  # may do nothing: the table is not new, its columns' types stay unknown
    table = _relname(node.relation)
    catalog.created.add(table)
    for element in node.tableElts or ():
        if type(element).__name__ == "ColumnDef":
            catalog.types[(table, element.colname)] = _pg_type(element.typeName)
    if node.partbound is not None:
        return [_unknown("CREATE TABLE ... PARTITION OF")]
    return []


def _pg_create_table_as(node: Any, catalog: Catalog) -> Verdict:
    if not node.if_not_exists:  # IF NOT EXISTS may do nothing: the table is not known new
        catalog.created.add(_relname(node.into.rel))
    return []


def _pg_type(type_name: Any) -> str:
    """`varchar(50)`, `text`, `int4`: the type's last name and its modifiers."""
    name = type_name.names[-1].sval
    mods = []
    for mod in type_name.typmods or ():
        value = getattr(getattr(mod, "val", None), "ival", None)
        mods.append(str(value) if value is not None else "?")
    suffix = "[]" if type_name.arrayBounds else ""
    return f"{name}({','.join(mods)}){suffix}" if mods else f"{name}{suffix}"


def _pg_index(node: Any, catalog: Catalog) -> Verdict:
    table = _relname(node.relation)
    if node.concurrent or table in catalog.created:
        return []
    message = "builds an index under a lock that blocks writes for the whole build"
    name = node.idxname or "index"
    return [("require-concurrent-index-creation", BLOCKING, message, f"create index {name}")]


def _pg_insert(node: Any, _catalog: Catalog) -> Verdict:
    conflict = node.onConflictClause
    from pglast.enums import OnConflictAction

    if conflict is not None and conflict.action == OnConflictAction.ONCONFLICT_UPDATE:
        table = _relname(node.relation)
        message = "INSERT ... ON CONFLICT DO UPDATE overwrites existing values"
        return [("update-rows", DESTRUCTIVE, message, f"update rows of {table}")]
    return []


def _pg_update(node: Any, catalog: Catalog) -> Verdict:
    """Safe only as a backfill: each column it sets is required to be NULL by its WHERE, or
    was added (or its table created) by this revision."""
    table = _relname(node.relation)
    targets = {target.name for target in node.targetList or ()}
    nulls = _pg_is_null_columns(node.whereClause)
    if targets and targets <= nulls and not node.fromClause:
        return []
    if targets and _filled_in(catalog, table, targets):
        return []
    message = "overwrites existing values (only a backfill of NULLs passes without consent)"
    return [("update-rows", DESTRUCTIVE, message, f"update rows of {table}")]


def _pg_is_null_columns(where: Any) -> set[str]:
    """Columns the WHERE clause requires to be NULL (`a IS NULL [AND b IS NULL ...]`)."""
    from pglast.enums import BoolExprType, NullTestType

    kind = type(where).__name__
    if kind == "NullTest" and where.nulltesttype == NullTestType.IS_NULL:
        fields = getattr(where.arg, "fields", None) or ()
        return {fields[-1].sval} if fields and hasattr(fields[-1], "sval") else set()
    if kind == "BoolExpr" and where.boolop == BoolExprType.AND_EXPR:
        found: set[str] = set()
        for arg in where.args:
            found |= _pg_is_null_columns(arg)
        return found
    return set()


def _pg_delete(node: Any, _catalog: Catalog) -> Verdict:
    table = _relname(node.relation)
    return [("delete-rows", DESTRUCTIVE, "deletes rows", f"delete rows of {table}")]


def _pg_truncate(node: Any, _catalog: Catalog) -> Verdict:
    tables = ", ".join(_relname(relation) for relation in node.relations)
    return [("truncate", DESTRUCTIVE, "deletes every row of a table", f"truncate {tables}")]


def _pg_merge(node: Any, _catalog: Catalog) -> Verdict:
    table = _relname(node.relation)
    message = "MERGE updates or deletes existing rows"
    return [("update-rows", DESTRUCTIVE, message, f"merge into {table}")]


def _pg_rename(node: Any, _catalog: Catalog) -> Verdict:
    old = _relname(node.relation) if node.relation is not None else ""
    what = f"{old}.{node.subname}" if node.subname else old
    message = "renames a table, column or index (breaks code still using the old name)"
    return [("rename", DESTRUCTIVE, message, f"rename {what} to {node.newname}".strip())]


def _pg_select(node: Any, _catalog: Catalog) -> Verdict:
    if node.intoClause is not None:
        return [_unknown("SELECT INTO")]
    return []  # nested writes and function calls are judged by _pg_nested


def _pg_set(node: Any, _catalog: Catalog) -> Verdict:
    """SET of an allow-listed setting to a literal value; RESET and SET ... DEFAULT never pass
    (they undo the run's own timeout guards, which the allow-list cannot see)."""
    from pglast.enums import VariableSetKind

    name = (node.name or "").lower()
    resets = {
        VariableSetKind.VAR_RESET_ALL: "reset all",
        VariableSetKind.VAR_RESET: f"reset {name}",
        VariableSetKind.VAR_SET_DEFAULT: f"set {name} to default",
    }
    if node.kind in resets:
        message = "resets session settings to their defaults, undoing the run's timeout guards"
        return [("unknown-setting", DESTRUCTIVE, message, resets[node.kind])]
    if node.kind != VariableSetKind.VAR_SET_VALUE:  # SET TRANSACTION, SET ... FROM CURRENT
        return _setting_verdict(f"{name} (not a plain value)", [None])
    values = [_pg_const(arg) for arg in node.args or ()]
    return _setting_verdict(name, values if len(values) == 1 else [None])


def _pg_const(node: Any) -> Any:
    """The value of a literal constant (`0`, `'5s'`), None for anything else."""
    value = getattr(node, "val", None)
    for attribute in ("ival", "fval", "sval"):
        if type(node).__name__ == "A_Const" and hasattr(value, attribute):
            return getattr(value, attribute)
    return None


def _setting_verdict(name: str, values: list[Any]) -> Verdict:
    """A session setting passes only when allow-listed; a timeout only with a non-zero literal."""
    if name not in _SAFE_SETTINGS:
        message = f"changes the setting {name}, whose effect on the migration is not known"
        return [("unknown-setting", DESTRUCTIVE, message, f"set {name}")]
    if name in _TIMEOUT_SETTINGS and not all(_positive_duration(value) for value in values):
        message = f"sets {name} to 0 or a value not read literally: the timeout guard is off"
        return [("timeout-off", DESTRUCTIVE, message, f"set {name}")]
    return []


def _positive_duration(value: Any) -> bool:
    """`5`, `'4s'`, `'30min'`: a literal, non-zero duration (anything else is not proven)."""
    if isinstance(value, bool) or value is None:
        return False
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*(?:us|ms|s|min|h|d)?\s*", str(value).lower())
    return match is not None and float(match.group(1)) > 0


def _pg_do(node: Any, _catalog: Catalog) -> Verdict:
    """A DO block always needs consent; PL/pgSQL's own parser says what it was seen to run."""
    options = {item.defname: getattr(item.arg, "sval", None) for item in node.args or ()}
    seen = _plpgsql_contents(options.get("as") or "", options.get("language") or "plpgsql")
    detail = f"; it {seen}" if seen else ""
    message = f"runs a procedural block (DO) whose effect cannot be known statically{detail}"
    return [("procedural-block", DESTRUCTIVE, message, "DO block")]


def _plpgsql_contents(body: str, language: str) -> str:
    """ "runs dynamic SQL (EXECUTE), drop table m" for a PL/pgSQL body; "" when nothing known."""
    import json

    from pglast import parse_plpgsql

    tag = "$consent_lint$"
    if language.lower() != "plpgsql" or tag in body:
        return ""
    try:
        tree = parse_plpgsql(
            f"CREATE FUNCTION f() RETURNS void AS {tag}{body}{tag} LANGUAGE plpgsql"
        )
    except Exception:
        return "could not be parsed as PL/pgSQL"
    text = json.dumps(tree)
    parts = ["runs dynamic SQL (EXECUTE)"] if "PLpgSQL_stmt_dynexecute" in text else []
    for query in _plpgsql_queries(tree):
        for _rule, _severity, _message, subject in _pg_judge(query, Catalog()):
            parts.append(subject)
    return ", ".join(dict.fromkeys(parts))


def _plpgsql_queries(tree: Any) -> Iterator[str]:
    """The SQL statements (`PLpgSQL_stmt_execsql`) anywhere in a parsed PL/pgSQL body."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == "PLpgSQL_stmt_execsql":
                query = value.get("sqlstmt", {}).get("PLpgSQL_expr", {}).get("query")
                if isinstance(query, str):
                    yield query
            yield from _plpgsql_queries(value)
    elif isinstance(tree, list):
        for item in tree:
            yield from _plpgsql_queries(item)


def _pg_function(node: Any, _catalog: Catalog) -> Verdict:
    if node.replace:
        message = "replaces a function that existing code and triggers may call"
        return [("replace-object", DESTRUCTIVE, message, "replace function")]
    return []


def _pg_view(node: Any, _catalog: Catalog) -> Verdict:
    if node.replace:
        message = "replaces a view that existing code may read"
        return [("replace-object", DESTRUCTIVE, message, f"replace view {_relname(node.view)}")]
    return []


def _pg_alter_enum(node: Any, _catalog: Catalog) -> Verdict:
    if node.oldVal:
        message = "renames an enum value (breaks code and rows still using it)"
        return [("rename", DESTRUCTIVE, message, f"rename enum value {node.oldVal}")]
    return []


def _pg_alter_sequence(node: Any, _catalog: Catalog) -> Verdict:
    options = {option.defname for option in node.options or ()}
    if options <= {"owned_by", "increment", "cache", "maxvalue", "minvalue", "as"}:
        return []
    message = "restarts or changes a sequence (may hand out keys already in use)"
    return [("alter-sequence", DESTRUCTIVE, message, f"alter sequence {_relname(node.sequence)}")]


def _pg_call(node: Any, _catalog: Catalog) -> Verdict:
    message = "calls a procedure whose effect cannot be known statically"
    return [("function-call", DESTRUCTIVE, message, "call a procedure")]


def _pg_execute(_node: Any, _catalog: Catalog) -> Verdict:
    message = "runs a prepared statement (dynamic SQL) whose effect cannot be known statically"
    return [("dynamic-sql", DESTRUCTIVE, message, "EXECUTE")]


def _pg_alter_table(node: Any, catalog: Catalog) -> Verdict:
    from pglast.enums import AlterTableType as At
    from pglast.enums import ObjectType

    table = _relname(node.relation)
    if node.objtype != ObjectType.OBJECT_TABLE:
        return [_unknown(f"ALTER {node.objtype.name.removeprefix('OBJECT_')}")]
    verdict: Verdict = []
    held = set(catalog.locked)
    for command in node.cmds:
        if command.subtype == At.AT_ValidateConstraint and table in held:
            if table not in catalog.created:
                verdict.append(_validate_under_lock(table, command.name))
        elif command.subtype != At.AT_ValidateConstraint:
            held.add(table)
        for item in _pg_alter_command(table, command, catalog):
            if item not in verdict:
                verdict.append(item)
    if catalog.in_transaction:
        catalog.locked |= held
    return verdict


def _validate_under_lock(table: str, name: str) -> tuple[str, str, str, str]:
    message = (
        "validates in the transaction that altered the table: its ACCESS EXCLUSIVE lock is "
        "held for the whole scan (validate in a separate transaction)"
    )
    return ("constraint-missing-not-valid", BLOCKING, message, f"validate {table}.{name}")


def _pg_alter_command(table: str, command: Any, catalog: Catalog) -> Verdict:
    from pglast.enums import AlterTableType as At

    subtype = command.subtype
    new = table in catalog.created
    column = command.name
    if subtype == At.AT_AddColumn:
        return _pg_add_column(table, command.def_, catalog)
    if subtype == At.AT_DropColumn:
        message = "drops a column and its data"
        return [("drop-column", DESTRUCTIVE, message, f"drop column {table}.{column}")]
    if subtype == At.AT_AlterColumnType:
        return _pg_alter_type(table, column, command.def_, catalog)
    if subtype == At.AT_SetNotNull:
        catalog.not_null.add((table, column))
        if new or (table, column) in catalog.validated:
            return []
        message = "makes a column NOT NULL with a full scan under an ACCESS EXCLUSIVE lock"
        return [("set-not-null", DESTRUCTIVE, message, f"set not null {table}.{column}")]
    if subtype in {At.AT_DropNotNull, At.AT_ColumnDefault}:
        return []  # loosening, or metadata only: existing rows are not touched
    if subtype == At.AT_AddConstraint:
        return _pg_add_constraint(table, command.def_, catalog)
    if subtype == At.AT_ValidateConstraint:
        checked = catalog.checks.get(column)
        if checked is not None:
            catalog.validated.add(checked)
        return []  # SHARE UPDATE EXCLUSIVE: writers keep going
    if subtype == At.AT_DropConstraint:
        if catalog.checks.get(column) in catalog.not_null:
            return []  # the helper check of the NOT NULL pattern: NOT NULL now guarantees it
        if command.missing_ok and (table, column) in catalog.not_null_checks_added:
            return []  # a leftover of that helper check, added again right after
        message = "drops a constraint (the guarantee it gave is gone)"
        return [("drop-constraint", DESTRUCTIVE, message, f"drop constraint {table}.{column}")]
    return [_unknown(f"ALTER TABLE {subtype.name.removeprefix('AT_')}")]


def _pg_add_column(table: str, definition: Any, catalog: Catalog) -> Verdict:
    """Nullable, or with a constant default (PostgreSQL 11+ stores it, no rewrite): safe."""
    from pglast.enums import ConstrType

    column = definition.colname
    catalog.types[(table, column)] = _pg_type(definition.typeName)
    catalog.added.add((table, column))
    if table in catalog.created:
        return []
    constraints = {constraint.contype: constraint for constraint in definition.constraints or ()}
    default = constraints.get(ConstrType.CONSTR_DEFAULT)
    subject = f"add column {table}.{column}"
    if _pg_type(definition.typeName) in {"serial", "bigserial", "smallserial"}:
        message = "adds a serial column: every existing row is rewritten with a new value"
        return [("adding-serial-primary-key-field", BLOCKING, message, subject)]
    if default is not None and _pg_volatile(default.raw_expr):
        message = "adds a column with a volatile default: the table is rewritten under a lock"
        return [("adding-field-with-default", BLOCKING, message, subject)]
    if ConstrType.CONSTR_GENERATED in constraints or ConstrType.CONSTR_IDENTITY in constraints:
        message = "adds a generated or identity column: the table is rewritten under a lock"
        return [("adding-field-with-default", BLOCKING, message, subject)]
    if ConstrType.CONSTR_NOTNULL in constraints and default is None:
        message = "adds a NOT NULL column without a default: fails on a table with rows"
        return [("adding-required-field", BLOCKING, message, subject)]
    if {ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_UNIQUE} & constraints.keys():
        message = "adds a unique column: its index is built under a lock that blocks writes"
        return [("disallowed-unique-constraint", BLOCKING, message, subject)]
    if {ConstrType.CONSTR_FOREIGN, ConstrType.CONSTR_CHECK} & constraints.keys():
        message = "adds a column with a constraint validated under a lock"
        return [("constraint-missing-not-valid", BLOCKING, message, subject)]
    return []


def _pg_volatile(expression: Any) -> bool:
    """Whether a default is evaluated per row: any function but the stable few is volatile."""
    for node in _pg_walk(expression):
        if type(node).__name__ == "FuncCall":
            name = node.funcname[-1].sval.lower()
            if name in _VOLATILE_DEFAULTS or name not in _SAFE_FUNCTIONS:
                return True
    return False


def _pg_alter_type(table: str, column: str, definition: Any, catalog: Catalog) -> Verdict:
    """Widening a varchar (or to text) rewrites nothing; anything else needs consent."""
    new_type = _pg_type(definition.typeName)
    old_type = catalog.column_type(table, column)
    catalog.types[(table, column)] = new_type
    if table in catalog.created or (definition.raw_default is None and _widens(old_type, new_type)):
        return []
    message = "changes a column's type (may rewrite the table or truncate values)"
    was = f" from {old_type}" if old_type else ""
    subject = f"change type of {table}.{column}{was} to {new_type}"
    return [("change-column-type", DESTRUCTIVE, message, subject)]


def _widens(old: str | None, new: str) -> bool:
    old_match = re.fullmatch(r"(?:varchar|character varying)(?:\((\d+)\))?", (old or "").lower())
    if old_match is None:
        return False
    if new.lower() in {"text", "varchar"}:
        return True
    new_match = re.fullmatch(r"varchar\((\d+)\)", new.lower())
    if new_match is None or old_match.group(1) is None:
        return False
    return int(new_match.group(1)) >= int(old_match.group(1))


def _pg_add_constraint(table: str, constraint: Any, catalog: Catalog) -> Verdict:
    from pglast.enums import ConstrType

    kind = constraint.contype
    name = constraint.conname or ""
    subject = f"add constraint {table}.{name}".rstrip(".")
    if kind == ConstrType.CONSTR_CHECK:
        null_column = _pg_not_null_check(constraint.raw_expr)
        if null_column and name:
            catalog.checks[name] = (table, null_column)
    if table in catalog.created:
        return []
    if kind in {ConstrType.CONSTR_FOREIGN, ConstrType.CONSTR_CHECK}:
        if constraint.skip_validation:
            return []  # NOT VALID: only new rows are checked, no scan under lock
        rule = (
            "adding-foreign-key-constraint"
            if kind == ConstrType.CONSTR_FOREIGN
            else "constraint-missing-not-valid"
        )
        message = "validates every row under a lock that blocks writes (add it NOT VALID)"
        return [(rule, BLOCKING, message, subject)]
    if kind in {ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY}:
        if constraint.indexname:
            return []  # USING INDEX: the index was built (concurrently) beforehand
        message = "builds a unique index under a lock that blocks writes"
        return [("disallowed-unique-constraint", BLOCKING, message, subject)]
    return [_unknown(f"ADD CONSTRAINT {kind.name.removeprefix('CONSTR_')}")]


def _pg_not_null_checks_added(parts: list[Statement]) -> set[tuple[str, str]]:
    """(table, name) of every `ADD CONSTRAINT name CHECK (col IS NOT NULL)` in the revision."""
    from pglast.enums import AlterTableType as At
    from pglast.enums import ConstrType

    found: set[tuple[str, str]] = set()
    for part in parts:
        node = None if part.bookkeeping else _pg_parse(part.text)
        if node is None or type(node).__name__ != "AlterTableStmt":
            continue
        for command in node.cmds or ():
            constraint = command.def_
            if (
                command.subtype == At.AT_AddConstraint
                and getattr(constraint, "contype", None) == ConstrType.CONSTR_CHECK
                and constraint.conname
                and _pg_not_null_check(constraint.raw_expr)
            ):
                found.add((_relname(node.relation), constraint.conname))
    return found


def _pg_not_null_check(expression: Any) -> str | None:
    """`col IS NOT NULL` -> col: the check that lets SET NOT NULL skip its scan."""
    from pglast.enums import NullTestType

    if type(expression).__name__ != "NullTest":
        return None
    if expression.nulltesttype != NullTestType.IS_NOT_NULL:
        return None
    fields = getattr(expression.arg, "fields", None) or ()
    return fields[-1].sval if fields and hasattr(fields[-1], "sval") else None


_PG_HANDLERS: dict[str, Callable[[Any, Catalog], Verdict]] = {
    "DropStmt": _pg_drop,
    "CreateStmt": _pg_create_table,
    "CreateTableAsStmt": _pg_create_table_as,
    "IndexStmt": _pg_index,
    "InsertStmt": _pg_insert,
    "UpdateStmt": _pg_update,
    "DeleteStmt": _pg_delete,
    "TruncateStmt": _pg_truncate,
    "MergeStmt": _pg_merge,
    "RenameStmt": _pg_rename,
    "SelectStmt": _pg_select,
    "VariableSetStmt": _pg_set,
    "DoStmt": _pg_do,
    "CreateFunctionStmt": _pg_function,
    "ViewStmt": _pg_view,
    "AlterEnumStmt": _pg_alter_enum,
    "AlterSeqStmt": _pg_alter_sequence,
    "CallStmt": _pg_call,
    "ExecuteStmt": _pg_execute,
    "AlterTableStmt": _pg_alter_table,
}


def _pg_walk(node: Any) -> Iterator[Any]:
    """Every node below `node` (itself included), depth first."""
    from pglast import ast

    if isinstance(node, (tuple, list)):
        for item in node:
            yield from _pg_walk(item)
        return
    if not isinstance(node, ast.Node):
        return
    yield node
    for name in node:  # a pglast Node iterates over its slot names
        yield from _pg_walk(getattr(node, name, None))


def _pg_nested(node: Any) -> Verdict:
    """Writes hidden inside a statement (a DELETE in a CTE) and calls of unknown functions."""
    found: Verdict = []
    for inner in _pg_walk(node):
        kind = type(inner).__name__
        if inner is not node and kind in {"DeleteStmt", "UpdateStmt", "MergeStmt"}:
            for item in _pg_statement(inner, Catalog()):
                found.append(item)
        elif inner is not node and kind == "InsertStmt":
            found.extend(_pg_insert(inner, Catalog()))
        elif kind == "FuncCall" and not _pg_in_definition(node):
            name = ".".join(part.sval for part in inner.funcname)
            setting = _pg_set_config(inner)
            if setting is not None:
                found.extend(item for item in setting if item not in found)
            elif name.lower().removeprefix("pg_catalog.") not in _SAFE_FUNCTIONS:
                message = f"calls {name}(), which may write: its effect cannot be known statically"
                found.append(("function-call", DESTRUCTIVE, message, f"call {name}()"))
    return found


def _pg_set_config(call: Any) -> Verdict | None:
    """`set_config(name, value, is_local)` judged like `SET name = value`; None for other calls.

    A name or value that is not a literal cannot be known, so it is not safe."""
    if ".".join(part.sval for part in call.funcname).lower().removeprefix("pg_catalog.") != (
        "set_config"
    ):
        return None
    args = list(call.args or ())
    setting = _pg_const(args[0]) if args else None
    if not isinstance(setting, str) or len(args) != 3:
        message = "set_config with a setting not named literally"
        return [("unknown-setting", DESTRUCTIVE, message, "call set_config()")]
    return _setting_verdict(setting.lower(), [_pg_const(args[1])])


def _pg_in_definition(node: Any) -> bool:
    """Statements whose function calls cannot write: a function's body is text not run here,
    and PostgreSQL refuses writes in the (immutable) functions of an index expression.

    Defaults, checks and views are not exempt: an unknown function there runs on every
    future insert or read, so it is as unknown as one called now.
    """
    return type(node).__name__ in {"CreateFunctionStmt", "IndexStmt"}


# --- MySQL/MariaDB and SQLite (sqlglot) --------------------------------------------------


def _glot_parse(text: str, dialect: str) -> Any | None:
    import sqlglot

    logging.getLogger("sqlglot").setLevel(logging.ERROR)  # its "falling back" chatter
    try:
        trees = sqlglot.parse(text, read=_GLOT.get(dialect, dialect))
    except Exception:
        return None
    trees = [tree for tree in trees if tree is not None]
    return trees[0] if len(trees) == 1 else None


def _glot_judge(text: str, dialect: str, catalog: Catalog, rebuilt: set[str]) -> Verdict:
    if _GLOT.get(dialect) == "mysql" and _has_executable_comment(text):
        message = "holds a MySQL executable comment (/*! ... */), which the server runs"
        return [("executable-comment", DESTRUCTIVE, message, "executable comment")]
    tree = _glot_parse(text, dialect)
    if tree is None:
        return _unparsable(_DIALECT_NAMES.get(dialect, dialect))
    verdict = _glot_statement(tree, dialect, catalog, rebuilt)
    return verdict + [item for item in _glot_nested(tree) if item not in verdict]


def _has_executable_comment(text: str) -> bool:
    import sqlglot

    try:
        tokens = sqlglot.Dialect.get_or_raise("mysql").tokenize(text)
    except Exception:
        return False  # the parser will refuse it anyway
    return any(_executable(token.comments) for token in tokens)


_SAFE_PRAGMAS = frozenset({"foreign_keys", "legacy_alter_table", "defer_foreign_keys"})
_ON = frozenset({"on", "1", "true", "yes"})  # PRAGMA foreign_keys passes only switched on
# Session settings a MariaDB/MySQL migration may change without consent: timeouts (only with a
# non-zero literal) and the connection's character set. FOREIGN_KEY_CHECKS=0 lets later writes
# leave orphans, sql_mode can make them truncate values silently: not on the list.
_SAFE_MYSQL_SETTINGS = frozenset(
    {
        "lock_wait_timeout",
        "innodb_lock_wait_timeout",
        "max_statement_time",
        "names",
        "character set",
    }
)
_MYSQL_TIMEOUTS = frozenset({"lock_wait_timeout", "innodb_lock_wait_timeout", "max_statement_time"})
# ALTER TABLE options (MariaDB's online DDL clauses) that keep the table open to writers.
_SAFE_ALTER_OPTIONS = {
    "ALGORITHMPROPERTY": frozenset({"DEFAULT", "INSTANT", "INPLACE", "NOCOPY"}),
    "LOCKPROPERTY": frozenset({"DEFAULT", "NONE"}),
}


def _glot_statement(tree: Any, dialect: str, catalog: Catalog, rebuilt: set[str]) -> Verdict:
    """The allow-list for MySQL/MariaDB and SQLite; `Command` is sqlglot's "not understood"."""
    from sqlglot import exp

    if isinstance(tree, (exp.Transaction, exp.Commit)):
        return []
    if isinstance(tree, exp.Create):
        return _glot_create(tree, catalog)
    if isinstance(tree, exp.Drop):
        return _glot_drop(tree, rebuilt)
    if isinstance(tree, exp.Alter):
        return _glot_alter(tree, catalog, rebuilt)
    if isinstance(tree, exp.Insert):
        return _glot_insert(tree)
    if isinstance(tree, exp.Update):
        return _glot_update(tree, catalog)
    if isinstance(tree, exp.Delete):
        table = tree.find(exp.Table)
        name = table.name if table is not None else ""
        return [("delete-rows", DESTRUCTIVE, "deletes rows", f"delete rows of {name}")]
    if isinstance(tree, exp.TruncateTable):
        names = ", ".join(table.name for table in tree.expressions)
        return [("truncate", DESTRUCTIVE, "deletes every row of a table", f"truncate {names}")]
    if isinstance(tree, (exp.Select, exp.Union)):
        return []  # reads; function calls are judged by _glot_nested
    if isinstance(tree, exp.Pragma):
        name = tree.this.name.lower() if tree.this is not None else ""
        value = tree.this.expression if isinstance(tree.this, exp.EQ) else None
        if name == "foreign_keys" and value is not None and value.name.lower() not in _ON:
            message = "switches foreign-key checks off: later writes may leave orphans"
            return [("unknown-setting", DESTRUCTIVE, message, "pragma foreign_keys off")]
        return [] if name in _SAFE_PRAGMAS else [_unknown(f"PRAGMA {name}")]
    if isinstance(tree, exp.Set):
        return _glot_set(tree)
    if isinstance(tree, exp.Command):
        return [_unknown(str(tree.this).upper())]
    return [_unknown(type(tree).__name__.upper())]


def _glot_set(tree: Any) -> Verdict:
    """Each item of a SET must be an allow-listed session setting with a harmless value."""
    verdict: Verdict = []
    items = list(tree.expressions) if not tree.args.get("unset") else []
    for item in items or [None]:
        name, value = _glot_set_item(item)
        if name in _SAFE_MYSQL_SETTINGS and (name not in _MYSQL_TIMEOUTS or _positive(value)):
            continue
        if name in _MYSQL_TIMEOUTS:
            message = f"sets {name} to 0 or a value not read literally: the timeout guard is off"
            found = ("timeout-off", DESTRUCTIVE, message, f"set {name}")
        else:
            what = name or "a setting not named plainly (GLOBAL, a user variable, ...)"
            message = f"changes {what}, whose effect on the migration is not known"
            found = ("unknown-setting", DESTRUCTIVE, message, f"set {name or 'setting'}")
        if found not in verdict:
            verdict.append(found)
    return verdict


def _glot_set_item(item: Any) -> tuple[str, Any]:
    """(setting name, literal value) of one SET item; ("", None) when it is not a session
    setting given plainly (GLOBAL, @@global., a user variable, a non-literal value)."""
    from sqlglot import exp

    if not isinstance(item, exp.SetItem):
        return "", None
    kind = str(item.args.get("kind") or "").upper()
    if kind in {"NAMES", "CHARACTER SET"}:
        return kind.lower(), None
    target = item.this.this if isinstance(item.this, exp.EQ) else None
    if kind not in {"", "SESSION"} or target is None:
        return "", None
    session_parameter = isinstance(target, exp.SessionParameter) and str(
        target.args.get("kind") or ""
    ).lower() in {"", "session"}
    if not (session_parameter or (isinstance(target, exp.Column) and not target.table)):
        return "", None
    name = target.name.lower()
    value = item.this.expression
    return name, value.this if isinstance(value, exp.Literal) else None


def _positive(value: Any) -> bool:
    """A literal number above 0 (a timeout that is on)."""
    try:
        return value is not None and float(str(value)) > 0
    except ValueError:
        return False


def _glot_create(tree: Any, catalog: Catalog) -> Verdict:
    from sqlglot import exp

    kind = (tree.args.get("kind") or "").upper()
    if tree.args.get("replace"):
        return [("replace-object", DESTRUCTIVE, f"replaces an existing {kind.lower()}", "replace")]
    if kind == "TABLE" and tree.args.get("exists"):
        return []  # IF NOT EXISTS: the table may exist, full, with other types: nothing learnt
    if kind == "TABLE":
        table = tree.find(exp.Table)
        name = table.name if table is not None else ""
        catalog.created.add(name)
        for column in tree.find_all(exp.ColumnDef):
            kind_of = column.args.get("kind")
            catalog.types[(name, column.name)] = kind_of.sql() if kind_of is not None else ""
        return []
    if kind in {"INDEX", "VIEW"}:
        return []  # InnoDB and SQLite build secondary indexes without blocking reads
    return [_unknown(f"CREATE {kind}")]


def _glot_drop(tree: Any, rebuilt: set[str]) -> Verdict:
    kind = (tree.args.get("kind") or "").upper()
    names = _glot_names(tree)
    name = ", ".join(names)
    if kind == "TABLE" and names and all(item.lower() in rebuilt for item in names):
        message = "rebuilds the table (SQLite batch mode): columns the new table lacks are lost"
        return [("table-rebuild", DESTRUCTIVE, message, f"rebuild table {name}")]
    if kind == "TABLE":
        return [("drop-table", DESTRUCTIVE, "drops a table and all its rows", f"drop table {name}")]
    if kind == "INDEX":
        return [("drop-index", DESTRUCTIVE, "drops an index", f"drop index {name}")]
    what = kind.lower() or "object"
    return [("drop-object", DESTRUCTIVE, f"drops a {what}", f"drop {what} {name}")]


def _glot_names(drop: Any) -> list[str]:
    """The names a sqlglot Drop (statement or ALTER TABLE action) drops."""
    targets = drop.args.get("tables") or ([drop.this] if drop.this is not None else [])
    return [target.name for target in targets]


def _glot_alter(tree: Any, catalog: Catalog, rebuilt: set[str]) -> Verdict:
    table = tree.this.name if tree.this is not None else ""
    if (tree.args.get("kind") or "").upper() != "TABLE":
        return [_unknown(f"ALTER {tree.args.get('kind')}")]
    verdict: Verdict = []
    found = [
        *(
            _glot_action(table, action, catalog, rebuilt)
            for action in tree.args.get("actions") or []
        ),
        *(_glot_alter_option(table, option) for option in tree.args.get("options") or []),
    ]
    for items in found:
        for item in items:
            if item not in verdict:
                verdict.append(item)
    return verdict


def _glot_alter_option(table: str, option: Any) -> Verdict:
    """MariaDB's ALTER TABLE options: ENGINE= copies the table into another engine (MEMORY,
    BLACKHOLE lose rows); ALGORITHM=COPY and LOCK=SHARED/EXCLUSIVE stop writers for the copy.
    Only the online forms pass (ALGORITHM=INSTANT/INPLACE/NOCOPY, LOCK=NONE)."""
    kind = type(option).__name__.upper()
    value = str(option.name or option.this or "").upper()
    if kind in _SAFE_ALTER_OPTIONS and value in _SAFE_ALTER_OPTIONS[kind]:
        return []
    if kind == "SCHEMACOMMENTPROPERTY":
        return []  # the table's comment: metadata only
    if kind == "ENGINEPROPERTY":
        message = f"moves the table to the {value} engine: a full copy, and some engines lose rows"
        return [("change-engine", DESTRUCTIVE, message, f"change engine of {table}")]
    if kind in _SAFE_ALTER_OPTIONS:
        setting = f"{kind.removesuffix('PROPERTY')}={value}"
        message = f"{setting}: the table is copied or locked and writers wait for the whole copy"
        return [("table-copy", BLOCKING, message, f"{setting.lower()} on {table}")]
    return [_unknown(f"ALTER TABLE option {option.sql()}")]


def _glot_action(table: str, action: Any, catalog: Catalog, rebuilt: set[str]) -> Verdict:
    from sqlglot import exp

    if isinstance(action, exp.ColumnDef):
        catalog.types[(table, action.name)] = (action.args.get("kind") or exp.Null()).sql()
        catalog.added.add((table, action.name))
        return []  # ADD COLUMN: instant or in place on MariaDB, native on SQLite
    if isinstance(action, exp.Drop):
        kind = (action.args.get("kind") or "").upper()
        name = ", ".join(_glot_names(action))
        if kind == "COLUMN":
            message = "drops a column and its data"
            return [("drop-column", DESTRUCTIVE, message, f"drop column {table}.{name}")]
        if kind == "INDEX":
            return [("drop-index", DESTRUCTIVE, "drops an index", f"drop index {table}.{name}")]
        message = "drops a constraint (the guarantee it gave is gone)"
        return [("drop-constraint", DESTRUCTIVE, message, f"drop constraint {table}.{name}")]
    if isinstance(action, exp.DropPrimaryKey):
        message = "drops the primary key"
        return [("drop-constraint", DESTRUCTIVE, message, f"drop primary key of {table}")]
    if isinstance(action, exp.ModifyColumn):
        message = "redefines a column (type, nullability, name): may truncate or reject values"
        name = action.this.name if action.this is not None else ""
        return [("change-column-type", DESTRUCTIVE, message, f"change column {table}.{name}")]
    if isinstance(action, exp.RenameColumn):
        message = "renames a column (breaks code still using the old name)"
        old = action.this.name if action.this is not None else ""
        return [("rename", DESTRUCTIVE, message, f"rename {table}.{old}")]
    if isinstance(action, exp.AlterRename):
        if table.startswith(_BATCH_PREFIX) and action.this.name.lower() in rebuilt:
            return []  # the batch rebuild, reported at its DROP TABLE
        message = "renames a table (breaks code still using the old name)"
        return [("rename", DESTRUCTIVE, message, f"rename table {table}")]
    if isinstance(action, exp.AlterColumn):
        return _glot_alter_column(table, action)
    if isinstance(action, exp.AddConstraint):
        return _glot_add_constraint(table, action, catalog)
    return [_unknown(f"ALTER TABLE {type(action).__name__.upper()}")]


def _glot_alter_column(table: str, action: Any) -> Verdict:
    name = action.this.name if action.this is not None else ""
    args = {key for key, value in action.args.items() if value is not None and key != "this"}
    if args and args <= {"default", "drop"}:
        return []  # SET/DROP DEFAULT: metadata only
    if action.args.get("allow_null") is True and args == {"allow_null"}:
        return []
    if "dtype" in args:
        message = "changes a column's type (may rewrite the table or truncate values)"
        return [("change-column-type", DESTRUCTIVE, message, f"change type of {table}.{name}")]
    message = "changes a column in a way not known to be safe"
    return [("change-column-type", DESTRUCTIVE, message, f"alter column {table}.{name}")]


def _glot_add_constraint(table: str, action: Any, catalog: Catalog) -> Verdict:
    from sqlglot import exp

    if table in catalog.created:
        return []
    subject = f"add constraint to {table}"
    if action.find(exp.ForeignKey) is not None:
        message = "adds a foreign key: MariaDB copies the table, blocking writes"
        return [("adding-foreign-key-constraint", BLOCKING, message, subject)]
    if action.find(exp.UniqueColumnConstraint) is not None:
        return []  # an in-place unique index build
    message = "adds a constraint validated over the whole table"
    return [("constraint-missing-not-valid", BLOCKING, message, subject)]


def _glot_insert(tree: Any) -> Verdict:
    from sqlglot import exp

    table = tree.find(exp.Table)
    name = table.name if table is not None else ""
    if (
        tree.args.get("conflict") is not None
        or tree.args.get("alternative")
        or tree.args.get("overwrite")
    ):
        message = "an INSERT that replaces or updates existing rows overwrites values"
        return [("update-rows", DESTRUCTIVE, message, f"update rows of {name}")]
    return []


def _filled_in(catalog: Catalog, table: str, targets: set[str]) -> bool:
    """Every column set is new in this revision (added, or its table created): a backfill."""
    if table in catalog.created:
        return True
    return all((table, column) in catalog.added for column in targets)


def _glot_update(tree: Any, catalog: Catalog) -> Verdict:
    from sqlglot import exp

    table = tree.find(exp.Table)
    name = table.name if table is not None else ""
    targets = {item.this.name for item in tree.expressions if isinstance(item, exp.EQ)}
    where = tree.args.get("where")
    nulls = _glot_is_null_columns(where.this) if where is not None else set()
    if targets and targets <= nulls and not tree.args.get("from"):
        return []
    if targets and not tree.args.get("from") and _filled_in(catalog, name, targets):
        return []
    message = "overwrites existing values (only a backfill of NULLs passes without consent)"
    return [("update-rows", DESTRUCTIVE, message, f"update rows of {name}")]


def _glot_is_null_columns(condition: Any) -> set[str]:
    from sqlglot import exp

    if isinstance(condition, exp.Is) and isinstance(condition.expression, exp.Null):
        return {condition.this.name} if isinstance(condition.this, exp.Column) else set()
    if isinstance(condition, exp.And):
        return _glot_is_null_columns(condition.this) | _glot_is_null_columns(condition.expression)
    if isinstance(condition, exp.Paren):
        return _glot_is_null_columns(condition.this)
    return set()


def _glot_nested(tree: Any) -> Verdict:
    """Writes nested in another statement, and calls of functions sqlglot does not know."""
    from sqlglot import exp

    found: Verdict = []
    definition = isinstance(tree, exp.Create) and (tree.args.get("kind") or "").upper() == "INDEX"
    for inner in tree.walk():
        if inner is tree:
            continue
        if isinstance(inner, (exp.Delete, exp.Update)):
            found.extend(_glot_statement(inner, "", Catalog(), set()))
        elif (
            isinstance(inner, exp.Anonymous) and not definition and not _in_column_definition(inner)
        ):
            name = str(inner.this)
            if name.lower() not in _SAFE_FUNCTIONS:
                message = f"calls {name}(), which may write: its effect cannot be known statically"
                found.append(("function-call", DESTRUCTIVE, message, f"call {name}()"))
    return found


def _in_column_definition(node: Any) -> bool:
    """A call inside a new table's column definition (a DEFAULT, a generated column, a CHECK)
    runs when a row is written later, not when the table is created: `DEFAULT
    (randomblob(16))` on a new table writes nothing. A call inside a query (`CREATE TABLE ... AS
    SELECT`) runs, and so does a default an ADD COLUMN fills existing rows with."""
    from sqlglot import exp

    in_column = False
    parent = node.parent
    while parent is not None:
        if isinstance(parent, exp.Query):
            return False
        if isinstance(parent, exp.ColumnDef):
            in_column = True
        if isinstance(parent, exp.Create):
            return in_column and (parent.args.get("kind") or "").upper() == "TABLE"
        parent = parent.parent
    return False


# --- squawk ------------------------------------------------------------------------------

# Squawk's lock and rewrite hazards, for rules our classifier does not judge itself.
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
# Squawk's names for hazards our classifier judges, mapped onto ours: one finding per statement.
SQUAWK_ALIASES = {
    "ban-drop-column": "drop-column",
    "ban-drop-table": "drop-table",
    "ban-drop-database": "drop-object",
    "ban-truncate-cascade": "truncate",
    "changing-column-type": "change-column-type",
    "adding-not-nullable-field": "set-not-null",
    "require-concurrent-index-deletion": "drop-index",
    "renaming-column": "rename",
    "renaming-table": "rename",
    "syntax-error": "unparsable",
}
# Rules our classifier decides with the parse tree and the catalog (what squawk cannot see:
# the column's current type, a check validated earlier): squawk's word on them is merged in
# where we agree and dropped where we proved the statement safe.
JUDGED = frozenset(
    {
        *SQUAWK_ALIASES.values(),
        "require-concurrent-index-creation",
        "adding-required-field",
        "adding-field-with-default",
        "adding-foreign-key-constraint",
        "constraint-missing-not-valid",
        "disallowed-unique-constraint",
        "adding-serial-primary-key-field",
    }
)


@dataclass(frozen=True)
class SquawkReport:
    rule: str
    message: str
    help: str
    statement: str  # the statement's text exactly as our splitter gave it, "" if unknown


def _squawk_reports(
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
    if binary is None or all(_is_transaction(part.text) for part in parts):
        return []
    command = [binary, "--reporter", "json", "--stdin-filepath", "revision.sql"]
    if not any(_pg_kind(part.text) == "BEGIN" for part in parts):
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
        return Finding("squawk-failed", WARNING, problem[:300], "", "squawk")
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

    node = _pg_parse(text)
    commands = getattr(node, "cmds", None) or ()
    return type(node).__name__ == "AlterTableStmt" and all(
        command.subtype == AlterTableType.AT_AlterColumnType for command in commands
    )


def _squawk_sees(part: Statement) -> bool:
    """Squawk needs BEGIN/COMMIT (transaction structure) but not alembic_version."""
    return not part.bookkeeping or _is_transaction(part.text)


def _pg_kind(text: str) -> str:
    node = _pg_parse(text)
    if node is None or type(node).__name__ != "TransactionStmt":
        return ""
    return node.kind.name.removeprefix("TRANS_STMT_")


def _is_transaction(text: str) -> bool:
    return _pg_kind(text) != ""


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
            severity = max(mine.severity, _squawk_severity(report.rule), key=_RANK.__getitem__)
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


# --- source scanning (revisions that cannot be rendered offline) -------------------------

# Alembic operations known not to lose data or block; any other `op.` call, and any
# op.execute whose SQL is not a literal we can classify, needs consent.
_SAFE_OPS = frozenset(
    {
        "create_table",
        "add_column",
        "create_index",
        "create_foreign_key",
        "create_unique_constraint",
        "create_check_constraint",
        "create_primary_key",
        "bulk_insert",
        "get_context",
        "create_table_comment",
        "create_exclude_constraint",
        "inline_literal",
        "f",
        "batch_alter_table",
        # A batched backfill (tasks/online/backfill.py): rows filled, none lost or blocked.
        "backfill",
    }
)
_SOURCE_RULES = {
    "drop_table": "drop-table",
    "drop_column": "drop-column",
    "drop_index": "drop-index",
    "drop_constraint": "drop-constraint",
    "rename_table": "rename",
    "drop_table_comment": "drop-object",
}


_RENDER_FAILED = "found in the revision's source (its SQL could not be rendered)"
RUNS_ONLINE = "runs differently online than the SQL shown (found in the revision's source)"

# Names that run code or reach objects chosen at run time: what they do cannot be read.
_DYNAMIC_CALLS = frozenset(
    {"exec", "eval", "compile", "__import__", "globals", "locals", "vars", "breakpoint"}
)
_DYNAMIC_ATTRIBUTES = frozenset({"getattr", "setattr", "delattr"})
_DYNAMIC_MODULES = frozenset(
    {"importlib", "runpy", "builtins", "code", "codeop", "ctypes", "subprocess", "pickle"}
)
_DUNDERS = frozenset(
    {"__dict__", "__getattribute__", "__globals__", "__builtins__", "__code__", "__subclasses__"}
)
# Attributes that reach the live connection (what runs through it is not the SQL shown offline).
_CONNECTION_ATTRIBUTES = frozenset(
    {
        "get_bind",
        "connection",
        "bind",
        "exec_driver_sql",
        "engine",
        "execute",
        "executemany",
        "executescript",
        "attributes",  # context.config.attributes["connection"]
        "connect",
        "raw_connection",
        "cursor",
        "create_engine",
        "create_async_engine",
    }
)
# Signs in a revision's source that it behaves differently offline than online.
_ONLINE_SIGNS = frozenset(
    {"is_offline_mode", "as_sql", "run_async", *_CONNECTION_ATTRIBUTES} - {"execute"}
)
# What `op.get_context()` may be asked without consent; the connection's own attributes are
# judged as connection uses.
_SAFE_CONTEXT_ATTRIBUTES = frozenset(
    {"autocommit_block", "as_sql", "dialect", "connection", "bind", "execute"}
)


def scan_source(
    source: str,
    upgrade: bool,
    ignored: frozenset[str] = frozenset(),
    dialect: str = "postgresql",
    why: str = _RENDER_FAILED,
) -> list[Finding]:
    """What a revision's upgrade() or downgrade() would do, read from its Python source.

    The fallback when Alembic cannot render a revision offline (it reads the database while
    migrating), and the second opinion on a revision that runs differently online
    (`runs_differently_online`). Fails closed like the SQL classifier: every
    `op.<name>(...)` call (and every `batch_op.<name>(...)`) is judged by the operation;
    `alter_column` passes only when it changes nothing but a comment or a default or makes a
    column nullable; `execute` (op's, or the connection's) passes only with literal SQL the
    classifier finds safe; a body that does not parse as Python, an operation we do not know,
    an import of op's members under other names, dynamic code (exec, eval, __import__,
    importlib, getattr) and any other use of the connection need consent.
    """
    import ast

    try:
        module = ast.parse(source)
    except SyntaxError:
        message = "the revision's source is not valid Python"
        return [_source_finding("unparsable", DESTRUCTIVE, message, "", why)]
    body = _direction_body(module, upgrade)
    lines = source.splitlines()
    created = {
        str(_literal(call.args[0]))
        for call in ast.walk(body)
        if _is_op_call(call, "create_table")
        and call.args
        and _literal(call.args[0])
        and not any(keyword.arg == "if_not_exists" for keyword in call.keywords)
    }
    findings: list[Finding] = []
    seen: set[tuple[str, str]] = set()  # one finding per rule and source line
    for rule, message, line in _source_calls(body, lines, dialect, created):
        if rule[0] in ignored or (rule[0], line) in seen:
            continue
        seen.add((rule[0], line))
        findings.append(_source_finding(*rule, message, line, why))
    return findings


def runs_differently_online(source: str, upgrade: bool) -> bool:
    """Whether a revision's source shows it may do online what its offline SQL does not show:
    it asks `is_offline_mode()` / `as_sql`, or uses the connection (`get_bind`, `.connection`,
    `.bind`, `exec_driver_sql`). Reading only `op.get_bind().dialect` is the same offline.
    Source that does not parse counts as different: not knowing is not safe."""
    import ast

    try:
        module = ast.parse(source)
    except SyntaxError:
        return True
    body = _direction_body(module, upgrade)
    dialect_only = {
        id(node.value)
        for node in ast.walk(body)
        if isinstance(node, ast.Attribute) and node.attr == "dialect"
    }
    for node in ast.walk(body):
        if isinstance(node, ast.Name) and node.id in _ONLINE_SIGNS:
            return True
        if isinstance(node, ast.Attribute) and node.attr == "execute":
            if not _is_op_name(node.value):
                return True  # execution through something else than op: a connection
        elif isinstance(node, ast.Attribute) and node.attr in _ONLINE_SIGNS:
            if node.attr == "get_bind" and _parent_call_id(body, node) in dialect_only:
                continue
            return True
    return False


def _parent_call_id(body: Any, attribute: Any) -> int | None:
    """The id of the call `attribute(...)` (the `op.get_bind()` whose `.get_bind` this is)."""
    import ast

    for node in ast.walk(body):
        if isinstance(node, ast.Call) and node.func is attribute:
            return id(node)
    return None


def _direction_body(module: Any, upgrade: bool) -> Any:
    """The module without the other direction's function.

    Helpers the function calls are module-level functions too: only the other direction's
    function is left out, so an op call moved into a helper is still seen."""
    import ast

    other = "downgrade" if upgrade else "upgrade"
    body = ast.Module(
        body=[
            node
            for node in module.body
            if not (isinstance(node, ast.FunctionDef) and node.name == other)
        ],
        type_ignores=[],
    )
    _name_batch_ops(body)
    return body


def _name_batch_ops(body: Any) -> None:
    """`with op.batch_alter_table(...) as b:` names `b` batch_op, so `b.drop_column(...)` is
    judged like `batch_op.drop_column(...)` (the scan recognises operations by their name)."""
    import ast

    names = {
        item.optional_vars.id
        for node in ast.walk(body)
        if isinstance(node, (ast.With, ast.AsyncWith))
        for item in node.items
        if _is_op_call(item.context_expr, "batch_alter_table")
        and isinstance(item.optional_vars, ast.Name)
    }
    for node in ast.walk(body):
        if isinstance(node, ast.Name) and node.id in names:
            node.id = "batch_op"


def _source_calls(
    body: Any, lines: list[str], dialect: str, created: set[str]
) -> Iterator[tuple[tuple[str, str], str, str]]:
    """((rule, severity), message, source line) for every operation in `body` needing consent."""
    import ast

    def line_of(node: Any) -> str:
        return lines[node.lineno - 1].strip() if node.lineno <= len(lines) else ""

    for node, rule, severity, message in _source_evasions(body):
        yield (rule, severity), message, line_of(node)
    judged = {
        id(call.func.value)
        for call in ast.walk(body)
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
    }
    for name in ast.walk(body):
        if (
            isinstance(name, ast.Name)
            and isinstance(name.ctx, ast.Load)
            and name.id in {"op", "batch_op"}
            and id(name) not in judged
        ):
            message = f"{name.id} used other than as op.<operation>(...)"
            yield ("unknown-statement", DESTRUCTIVE), message, line_of(name)
    covered = _covered_connection_nodes(body)
    receivers = {id(node.value) for node in ast.walk(body) if isinstance(node, ast.Attribute)}
    for node in ast.walk(body):
        if isinstance(node, ast.Call) and _bind_execute(node):
            verdict = _judge_call("execute", node, dialect, created)  # op.get_bind().execute
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in _CONNECTION_ATTRIBUTES
            and id(node) not in covered
            and not _is_op_name(node.value)
        ) or (_is_op_call(node, "get_bind") and id(node) not in covered):
            where = f".{node.attr}" if isinstance(node, ast.Attribute) else "op.get_bind()"
            message = f"{where}: what runs through the connection cannot be known statically"
            verdict = [("connection-use", message, DESTRUCTIVE)]
        elif isinstance(node, ast.Call) and _is_op_call(node, "get_context"):
            if id(node) in receivers:
                continue  # judged by the attribute asked of it
            verdict = [("unknown-statement", "op.get_context() kept for later use", DESTRUCTIVE)]
        elif (
            isinstance(node, ast.Attribute)
            and _is_op_call(node.value, "get_context")
            and node.attr not in _SAFE_CONTEXT_ATTRIBUTES
        ):
            message = f"op.get_context().{node.attr} is not known to be safe"
            verdict = [("unknown-statement", message, DESTRUCTIVE)]
        elif (
            _is_op_call(node)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr != "get_bind"
        ):
            verdict = _judge_call(node.func.attr, node, dialect, created)
        else:
            continue
        for rule, message, severity in verdict:
            yield (rule, severity), message, line_of(node)


def _source_evasions(body: Any) -> Iterator[tuple[Any, str, str, str]]:
    """(node, rule, severity, message) for what hides an operation from the scan: op's members
    imported under other names, alembic imported whole, dynamic code and dynamic imports."""
    import ast

    for node in ast.walk(body):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module == "alembic":
                for alias in node.names:
                    if alias.name not in {"op", "context"} or alias.asname not in {
                        None,
                        alias.name,
                    }:
                        message = f"from alembic import {alias.name}: not read as op.<operation>"
                        yield node, "unknown-statement", DESTRUCTIVE, message
            elif module.split(".")[0] == "alembic" and module != "alembic.context":
                message = f"imports from {module}: operations used other than as op.<operation>"
                yield node, "unknown-statement", DESTRUCTIVE, message
            elif module.split(".")[0] in _DYNAMIC_MODULES:
                message = f"imports from {module}: code chosen at run time cannot be read"
                yield node, "dynamic-code", DESTRUCTIVE, message
        elif isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top == "alembic":
                    message = f"import {alias.name}: operations used other than as op.<operation>"
                    yield node, "unknown-statement", DESTRUCTIVE, message
                elif top in _DYNAMIC_MODULES:
                    message = f"import {alias.name}: code chosen at run time cannot be read"
                    yield node, "dynamic-code", DESTRUCTIVE, message
        elif isinstance(node, ast.Name) and node.id in _DYNAMIC_CALLS:
            message = f"{node.id}(): code built at run time cannot be read"
            yield node, "dynamic-code", DESTRUCTIVE, message
        elif isinstance(node, ast.Name) and node.id in _DYNAMIC_ATTRIBUTES:
            message = f"{node.id}(): an attribute chosen at run time cannot be resolved"
            yield node, "unknown-statement", DESTRUCTIVE, message
        elif isinstance(node, ast.Attribute) and node.attr in _DUNDERS:
            message = f".{node.attr}: reaches objects the scan cannot resolve"
            yield node, "dynamic-code", DESTRUCTIVE, message


def _covered_connection_nodes(body: Any) -> set[int]:
    """Nodes of connection uses the scan reads: `<connection>.execute("literal")` (judged by its
    SQL) and `op.get_bind().dialect` / `op.get_context().dialect` (the same offline)."""
    import ast

    covered: set[int] = set()
    for node in ast.walk(body):
        if isinstance(node, ast.Call) and _bind_execute(node):
            covered |= {id(inner) for inner in ast.walk(node.func)}
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in {"dialect", "as_sql"}
            and _connection_expr(node.value)
        ):
            covered |= {id(inner) for inner in ast.walk(node.value)}
    return covered


def _is_op_name(node: Any) -> bool:
    import ast

    return isinstance(node, ast.Name) and node.id in {"op", "batch_op"}


def _is_op_call(call: Any, operation: str | None = None) -> TypeGuard[ast.Call]:
    """`op.<operation>(...)` or `batch_op.<operation>(...)` (any operation when None)."""
    import ast

    return (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and _is_op_name(call.func.value)
        and (operation is None or call.func.attr == operation)
    )


def _connection_expr(node: Any) -> bool:
    """`op.get_bind()`, `op.get_context()`, `op.get_context().connection` / `.bind`,
    `context.get_bind()`: where SQL handed to `.execute(...)` runs as given."""
    import ast

    if _is_op_call(node, "get_bind") or _is_op_call(node, "get_context"):
        return True
    if isinstance(node, ast.Attribute) and node.attr in {"connection", "bind"}:
        return _is_op_call(node.value, "get_context")
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get_bind"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "context"
    )


def _bind_execute(call: Any) -> bool:
    """`op.get_bind().execute(...)` and the like: judged like op.execute, by the SQL given."""
    import ast

    return (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and call.func.attr in {"execute", "exec_driver_sql"}
        and _connection_expr(call.func.value)
    )


def _source_finding(
    rule: str, severity: str, message: str, line: str, why: str = _RENDER_FAILED
) -> Finding:
    text = f"{why}: {message}"
    return Finding(rule, severity, text, line, "source", subject=rule.replace("-", " "))


SourceVerdict = list[tuple[str, str, str]]  # (rule, message, severity)


def _judge_call(operation: str, call: Any, dialect: str, created: set[str]) -> SourceVerdict:
    """One `op.<operation>(...)` call: the allow-list for revisions read from source."""
    import ast

    if operation in _SOURCE_RULES:
        return [(_SOURCE_RULES[operation], operation.replace("_", " "), DESTRUCTIVE)]
    if operation == "alter_column":
        return _judge_alter_column(call)
    if operation == "execute":
        argument = call.args[0] if call.args else None
        if isinstance(argument, ast.Call) and _called(argument) == "text":
            argument = argument.args[0] if argument.args else None
        if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
            return [
                (finding.rule, f"op.execute: {finding.message}", finding.severity)
                for finding in classify(argument.value, dialect)
            ]
        return [("dynamic-sql", "op.execute with SQL that is not a literal", DESTRUCTIVE)]
    if operation in _SAFE_OPS:
        return _pg_source_locks(operation, call, created) if dialect == "postgresql" else []
    message = f"op.{operation} is not an operation known to be safe"
    return [("unknown-statement", message, DESTRUCTIVE)]


def _judge_alter_column(call: Any) -> SourceVerdict:
    import ast

    keywords = {keyword.arg: keyword.value for keyword in call.keywords}
    found = []
    if "type_" in keywords:
        found.append(("change-column-type", "alter_column with type_", DESTRUCTIVE))
    nullable = keywords.get("nullable")
    if nullable is not None and not (isinstance(nullable, ast.Constant) and nullable.value is True):
        found.append(("set-not-null", "alter_column with nullable=False", DESTRUCTIVE))
    if "new_column_name" in keywords:
        found.append(("rename", "alter_column with new_column_name", DESTRUCTIVE))
    allowed = {"type_", "nullable", "new_column_name", "comment", "server_default", "schema"}
    if set(keywords) - allowed - {k for k in keywords if k and k.startswith("existing_")}:
        message = "alter_column with options not known to be safe"
        found.append(("unknown-statement", message, DESTRUCTIVE))
    return found


def _pg_source_locks(operation: str, call: Any, created: set[str]) -> SourceVerdict:
    """PostgreSQL lock hazards of otherwise safe operations, unless the table is new."""
    keywords = {keyword.arg: keyword.value for keyword in call.keywords}
    table = _literal(call.args[1] if len(call.args) > 1 else keywords.get("table_name"))
    if operation == "create_foreign_key":
        table = _literal(call.args[1] if len(call.args) > 1 else keywords.get("source_table"))
    if table is not None and table in created:
        return []
    if operation == "create_index" and not _literal(keywords.get("postgresql_concurrently")):
        message = "create_index without postgresql_concurrently=True"
        return [("require-concurrent-index-creation", message, BLOCKING)]
    if operation in {"create_foreign_key", "create_check_constraint"} and not _literal(
        keywords.get("postgresql_not_valid")
    ):
        rule = (
            "adding-foreign-key-constraint"
            if operation == "create_foreign_key"
            else "constraint-missing-not-valid"
        )
        return [(rule, f"{operation} without postgresql_not_valid=True", BLOCKING)]
    if operation in {"create_unique_constraint", "create_primary_key"}:
        message = f"{operation} builds its index under a lock that blocks writes"
        return [("disallowed-unique-constraint", message, BLOCKING)]
    if operation == "add_column":
        return _pg_source_add_column(call)
    return []


def _pg_source_add_column(call: Any) -> SourceVerdict:
    """`sa.Column(..., nullable=False)` without a server default fails on a table with rows."""
    import ast

    position = 0 if call.func.value.id == "batch_op" else 1  # batch_op knows its table
    column = call.args[position] if len(call.args) > position else None
    if not isinstance(column, ast.Call):
        return [("unknown-statement", "add_column with a column not written out", DESTRUCTIVE)]
    keywords = {keyword.arg: keyword.value for keyword in column.keywords}
    required = _literal(keywords.get("nullable")) is False or _literal(keywords.get("primary_key"))
    if required and "server_default" not in keywords:
        message = "add_column of a NOT NULL column without a server default"
        return [("adding-required-field", message, BLOCKING)]
    return []


def _literal(node: Any) -> Any:
    """The value of a literal in the source (a string, True, 3), None for anything else."""
    import ast

    return node.value if isinstance(node, ast.Constant) else None


def _called(call: Any) -> str:
    """`text` for `text(...)` and `sa.text(...)`."""
    func = call.func
    return str(getattr(func, "id", None) or getattr(func, "attr", ""))


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
    catalog: Catalog | None = None,
) -> list[Finding]:
    """Our classifier on every dialect; on PostgreSQL merged with squawk's findings."""
    findings = classify(sql, dialect, ignored, catalog)
    if dialect != "postgresql":
        return findings
    reports = _squawk_reports(sql, preamble, pg_version)
    if isinstance(reports, Finding):
        return [*findings, reports]
    return merge(findings, reports, ignored)
