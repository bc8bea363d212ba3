"""MySQL/MariaDB and SQLite statements judged on `sqlglot`'s parser for the dialect.

`judge(text, dialect, catalog, rebuilt)` is the allow-list for one statement (`Command`, sqlglot's
"not understood", always needs consent); `nested` finds writes and unknown function calls
hidden inside a statement; `batch_rebuilt` names the tables SQLite batch mode rebuilds.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from tasks.lint import allowlists
from tasks.lint.findings import (
    BATCH_PREFIX,
    Catalog,
    Statement,
    Verdict,
    filled_in,
    unknown,
    unparsable,
)
from tasks.lint.rules import Rule, hit


def executable_comment(comments: list[str] | None) -> bool:
    """Whether sqlglot's comment texts include a MySQL/MariaDB executable comment."""
    return any(comment.lstrip().startswith(("!", "M!")) for comment in comments or ())


GLOT = {"mysql": "mysql", "mariadb": "mysql", "sqlite": "sqlite"}
DIALECT_NAMES = {"mysql": "MySQL", "mariadb": "MariaDB", "sqlite": "SQLite"}


@functools.lru_cache(maxsize=256)
def parse(text: str, dialect: str) -> Any | None:
    """The one statement in `text`, or None (cached like `pg_nodes.parse`; trees are only read)."""
    import sqlglot

    logging.getLogger("sqlglot").setLevel(logging.ERROR)  # its "falling back" chatter
    try:
        trees = sqlglot.parse(text, read=GLOT.get(dialect, dialect))
    except Exception:
        return None
    trees = [tree for tree in trees if tree is not None]
    return trees[0] if len(trees) == 1 else None


def judge(text: str, dialect: str, catalog: Catalog, rebuilt: set[str]) -> Verdict:
    if GLOT.get(dialect) == "mysql" and _has_executable_comment(text):
        message = "holds a MySQL executable comment (/*! ... */), which the server runs"
        return [hit(Rule.EXECUTABLE_COMMENT, message, "executable comment")]
    tree = parse(text, dialect)
    if tree is None:
        return unparsable(DIALECT_NAMES.get(dialect, dialect))
    verdict = _glot_statement(tree, dialect, catalog, rebuilt)
    return verdict + [item for item in nested(tree) if item not in verdict]


def _has_executable_comment(text: str) -> bool:
    import sqlglot

    try:
        tokens = sqlglot.Dialect.get_or_raise("mysql").tokenize(text)
    except Exception:
        return False  # the parser will refuse it anyway
    return any(executable_comment(token.comments) for token in tokens)


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
        return [hit(Rule.DELETE_ROWS, "deletes rows", f"delete rows of {name}")]
    if isinstance(tree, exp.TruncateTable):
        names = ", ".join(table.name for table in tree.expressions)
        return [hit(Rule.TRUNCATE, "deletes every row of a table", f"truncate {names}")]
    if isinstance(tree, (exp.Select, exp.Union)):
        return []  # reads; function calls are judged by nested
    if isinstance(tree, exp.Show) or (
        isinstance(tree, exp.Describe) and isinstance(tree.this, exp.Table)
    ):
        return []  # SHOW ..., DESCRIBE table: reads (SQLAlchemy's reflection)
    if isinstance(tree, exp.Pragma):
        name = _pragma_name(tree)
        value = tree.this.expression if isinstance(tree.this, exp.EQ) else None
        if name in allowlists.READING_PRAGMAS:
            return []  # a schema query (SQLAlchemy's reflection, batch mode): reads only
        if (
            name == "foreign_keys"
            and value is not None
            and value.name.lower() not in allowlists.SWITCHED_ON
        ):
            message = "switches foreign-key checks off: later writes may leave orphans"
            return [hit(Rule.UNKNOWN_SETTING, message, "pragma foreign_keys off")]
        return [] if name in allowlists.SAFE_PRAGMAS else [unknown(f"PRAGMA {name}")]
    if isinstance(tree, exp.Set):
        return _glot_set(tree)
    if isinstance(tree, exp.Command):
        return [unknown(str(tree.this).upper())]
    return [unknown(type(tree).__name__.upper())]


def _pragma_name(tree: Any) -> str:
    """`table_info` of `PRAGMA main.table_info("t")`, `foreign_keys` of `PRAGMA foreign_keys=ON`."""
    from sqlglot import exp

    target = tree.this.this if isinstance(tree.this, exp.EQ) else tree.this
    if isinstance(target, exp.Dot):
        target = target.expression
    return target.name.lower() if target is not None else ""


def _glot_set(tree: Any) -> Verdict:
    """Each item of a SET must be an allow-listed session setting with a harmless value."""
    verdict: Verdict = []
    items = list(tree.expressions) if not tree.args.get("unset") else []
    for item in items or [None]:
        name, value = _glot_set_item(item)
        if name in allowlists.SAFE_MYSQL_SETTINGS and (
            name not in allowlists.MYSQL_TIMEOUTS or _positive(value, name)
        ):
            continue
        if name in allowlists.MYSQL_TIMEOUTS:
            message = f"sets {name} to 0 or a value not read literally: the timeout guard is off"
            found = hit(Rule.TIMEOUT_OFF, message, f"set {name}")
        else:
            what = name or "a setting not named plainly (GLOBAL, a user variable, ...)"
            message = f"changes {what}, whose effect on the migration is not known"
            found = hit(Rule.UNKNOWN_SETTING, message, f"set {name or 'setting'}")
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


def _positive(value: Any, name: str = "") -> bool:
    """A literal number the server keeps above 0 (a timeout that is on): the lock waits are
    whole seconds, so `0.4` is not proven to be on; max_statement_time takes fractions."""
    try:
        number = float(str(value)) if value is not None else 0.0
    except ValueError:
        return False
    return number > 0 if name == "max_statement_time" else number >= 1


def _glot_create(tree: Any, catalog: Catalog) -> Verdict:
    from sqlglot import exp

    kind = (tree.args.get("kind") or "").upper()
    if tree.args.get("replace"):
        return [hit(Rule.REPLACE_OBJECT, f"replaces an existing {kind.lower()}", "replace")]
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
    return [unknown(f"CREATE {kind}")]


def _glot_drop(tree: Any, rebuilt: set[str]) -> Verdict:
    kind = (tree.args.get("kind") or "").upper()
    names = _glot_names(tree)
    name = ", ".join(names)
    if kind == "TABLE" and names and all(item.lower() in rebuilt for item in names):
        message = "rebuilds the table (SQLite batch mode): columns the new table lacks are lost"
        return [hit(Rule.TABLE_REBUILD, message, f"rebuild table {name}")]
    if kind == "TABLE":
        return [hit(Rule.DROP_TABLE, "drops a table and all its rows", f"drop table {name}")]
    if kind == "INDEX":
        return [hit(Rule.DROP_INDEX, "drops an index", f"drop index {name}")]
    what = kind.lower() or "object"
    return [hit(Rule.DROP_OBJECT, f"drops a {what}", f"drop {what} {name}")]


def _glot_names(drop: Any) -> list[str]:
    """The names a sqlglot Drop (statement or ALTER TABLE action) drops."""
    targets = drop.args.get("tables") or ([drop.this] if drop.this is not None else [])
    return [target.name for target in targets]


def _glot_alter(tree: Any, catalog: Catalog, rebuilt: set[str]) -> Verdict:
    table = tree.this.name if tree.this is not None else ""
    if (tree.args.get("kind") or "").upper() != "TABLE":
        return [unknown(f"ALTER {tree.args.get('kind')}")]
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
    if kind in allowlists.SAFE_ALTER_OPTIONS and value in allowlists.SAFE_ALTER_OPTIONS[kind]:
        return []
    if kind == "SCHEMACOMMENTPROPERTY":
        return []  # the table's comment: metadata only
    if kind == "ENGINEPROPERTY":
        message = f"moves the table to the {value} engine: a full copy, and some engines lose rows"
        return [hit(Rule.CHANGE_ENGINE, message, f"change engine of {table}")]
    if kind in allowlists.SAFE_ALTER_OPTIONS:
        setting = f"{kind.removesuffix('PROPERTY')}={value}"
        message = f"{setting}: the table is copied or locked and writers wait for the whole copy"
        return [hit(Rule.TABLE_COPY, message, f"{setting.lower()} on {table}")]
    return [unknown(f"ALTER TABLE option {option.sql()}")]


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
            return [hit(Rule.DROP_COLUMN, message, f"drop column {table}.{name}")]
        if kind == "INDEX":
            return [hit(Rule.DROP_INDEX, "drops an index", f"drop index {table}.{name}")]
        message = "drops a constraint (the guarantee it gave is gone)"
        return [hit(Rule.DROP_CONSTRAINT, message, f"drop constraint {table}.{name}")]
    if isinstance(action, exp.DropPrimaryKey):
        message = "drops the primary key"
        return [hit(Rule.DROP_CONSTRAINT, message, f"drop primary key of {table}")]
    if isinstance(action, exp.ModifyColumn):
        message = "redefines a column (type, nullability, name): may truncate or reject values"
        name = action.this.name if action.this is not None else ""
        return [hit(Rule.CHANGE_COLUMN_TYPE, message, f"change column {table}.{name}")]
    if isinstance(action, exp.RenameColumn):
        message = "renames a column (breaks code still using the old name)"
        old = action.this.name if action.this is not None else ""
        return [hit(Rule.RENAME, message, f"rename {table}.{old}")]
    if isinstance(action, exp.AlterRename):
        if table.startswith(BATCH_PREFIX) and action.this.name.lower() in rebuilt:
            return []  # the batch rebuild, reported at its DROP TABLE
        message = "renames a table (breaks code still using the old name)"
        return [hit(Rule.RENAME, message, f"rename table {table}")]
    if isinstance(action, exp.AlterColumn):
        return _glot_alter_column(table, action)
    if isinstance(action, exp.AddConstraint):
        return _glot_add_constraint(table, action, catalog)
    return [unknown(f"ALTER TABLE {type(action).__name__.upper()}")]


def _glot_alter_column(table: str, action: Any) -> Verdict:
    name = action.this.name if action.this is not None else ""
    args = {key for key, value in action.args.items() if value is not None and key != "this"}
    if args and args <= {"default", "drop"}:
        return []  # SET/DROP DEFAULT: metadata only
    if action.args.get("allow_null") is True and args == {"allow_null"}:
        return []
    if "dtype" in args:
        message = "changes a column's type (may rewrite the table or truncate values)"
        return [hit(Rule.CHANGE_COLUMN_TYPE, message, f"change type of {table}.{name}")]
    message = "changes a column in a way not known to be safe"
    return [hit(Rule.CHANGE_COLUMN_TYPE, message, f"alter column {table}.{name}")]


def _glot_add_constraint(table: str, action: Any, catalog: Catalog) -> Verdict:
    from sqlglot import exp

    if table in catalog.created:
        return []
    subject = f"add constraint to {table}"
    if action.find(exp.ForeignKey) is not None:
        message = "adds a foreign key: MariaDB copies the table, blocking writes"
        return [hit(Rule.ADDING_FOREIGN_KEY_CONSTRAINT, message, subject)]
    if action.find(exp.UniqueColumnConstraint) is not None:
        return []  # an in-place unique index build
    message = "adds a constraint validated over the whole table"
    return [hit(Rule.CONSTRAINT_MISSING_NOT_VALID, message, subject)]


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
        return [hit(Rule.UPDATE_ROWS, message, f"update rows of {name}")]
    return []


def _glot_update(tree: Any, catalog: Catalog) -> Verdict:
    from sqlglot import exp

    table = tree.find(exp.Table)
    name = table.name if table is not None else ""
    targets = {item.this.name for item in tree.expressions if isinstance(item, exp.EQ)}
    where = tree.args.get("where")
    nulls = _glot_is_null_columns(where.this) if where is not None else set()
    # MariaDB's multi-table UPDATE (`UPDATE a JOIN b ... SET`) writes every table it names:
    # only a single-table backfill passes.
    multi_table = bool(tree.args.get("from")) or bool(table is not None and table.args.get("joins"))
    if targets and targets <= nulls and not multi_table:
        return []
    if targets and not multi_table and filled_in(catalog, name, targets):
        return []
    message = "overwrites existing values (only a backfill of NULLs passes without consent)"
    return [hit(Rule.UPDATE_ROWS, message, f"update rows of {name}")]


def _glot_is_null_columns(condition: Any) -> set[str]:
    from sqlglot import exp

    if isinstance(condition, exp.Is) and isinstance(condition.expression, exp.Null):
        return {condition.this.name} if isinstance(condition.this, exp.Column) else set()
    if isinstance(condition, exp.And):
        return _glot_is_null_columns(condition.this) | _glot_is_null_columns(condition.expression)
    if isinstance(condition, exp.Paren):
        return _glot_is_null_columns(condition.this)
    return set()


def nested(tree: Any) -> Verdict:
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
            if name.lower() not in allowlists.SAFE_FUNCTIONS:
                message = f"calls {name}(), which may write: its effect cannot be known statically"
                found.append(hit(Rule.FUNCTION_CALL, message, f"call {name}()"))
    return found


# --- squawk ------------------------------------------------------------------------------


def batch_rebuilt(parts: list[Statement], dialect: str) -> set[str]:
    """Tables rebuilt by SQLite batch mode: `ALTER TABLE _alembic_tmp_x RENAME TO x`."""
    if dialect == "postgresql":
        return set()
    from sqlglot import exp

    found = set()
    for part in parts:
        tree = parse(part.text, dialect)
        if isinstance(tree, exp.Alter):
            source = tree.this.name if tree.this is not None else ""
            for action in tree.args.get("actions") or []:
                if isinstance(action, exp.AlterRename) and source.startswith(BATCH_PREFIX):
                    found.add(action.this.name.lower())
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
