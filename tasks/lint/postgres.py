"""PostgreSQL statements judged on PostgreSQL's own grammar (`pglast`).

`judge(text, catalog)` is the allow-list for one statement: a handler per statement kind in
`_PG_HANDLERS`, kinds in `_PG_ALWAYS_SAFE` pass, anything else needs consent; `nested` finds
writes and unknown function calls hidden inside a statement (a DELETE in a CTE, a call in a
default). See `tasks.lint.classifier` for the decisions worth knowing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from tasks.lint import allowlists, pg_nodes, postgres_alter
from tasks.lint.findings import Catalog, Verdict, filled_in, unknown, unparsable
from tasks.lint.pg_nodes import parse
from tasks.lint.rules import Rule, hit


def judge(text: str, catalog: Catalog) -> Verdict:
    node = parse(text)
    if node is None:
        return unparsable("PostgreSQL")
    verdict = _pg_statement(node, catalog)
    return verdict + [item for item in nested(node, catalog) if item not in verdict]


def _pg_statement(node: Any, catalog: Catalog) -> Verdict:
    """The allow-list: what is known safe returns []; anything not listed needs consent."""
    kind = type(node).__name__
    handler = _PG_HANDLERS.get(kind)
    if handler is not None:
        return handler(node, catalog)
    if kind in _PG_ALWAYS_SAFE:
        return []
    return [unknown(_pg_kind_name(node))]


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
        "CreateStatsStmt",
    }
)


def _pg_kind_name(node: Any) -> str:
    """`DoStmt` -> "DO", `CreateTrigStmt` -> "CREATE TRIG" (for messages)."""
    name = type(node).__name__.removesuffix("Stmt")
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).upper()


def drop_names(node: Any, *, qualified: bool = False) -> list[str]:
    """The names a DROP statement drops (`schema.name` as written, with `qualified`)."""
    names = []
    for item in node.objects or ():
        parts = item if isinstance(item, tuple) else (item,)
        words = [getattr(part, "sval", None) or str(part) for part in parts]
        names.append(".".join(words) if qualified else words[-1])
    return names


def _pg_drop(node: Any, _catalog: Catalog) -> Verdict:
    from pglast.enums import ObjectType

    names = ", ".join(drop_names(node))
    kind = node.removeType
    if kind == ObjectType.OBJECT_INDEX and node.concurrent:
        return []  # no data, no blocking lock
    if kind == ObjectType.OBJECT_TABLE:
        return [hit(Rule.DROP_TABLE, "drops a table and all its rows", f"drop table {names}")]
    if kind == ObjectType.OBJECT_INDEX:
        message = "drops an index under an ACCESS EXCLUSIVE lock (DROP INDEX CONCURRENTLY does not)"
        return [hit(Rule.DROP_INDEX, message, f"drop index {names}")]
    what = kind.name.removeprefix("OBJECT_").lower().replace("_", " ")
    rule = Rule.DROP_TYPE if kind == ObjectType.OBJECT_TYPE else Rule.DROP_OBJECT
    return [hit(rule, f"drops a {what}", f"drop {what} {names}")]


def _pg_create_table(node: Any, catalog: Catalog) -> Verdict:
    if node.if_not_exists and node.partbound is None:
        return []  # may do nothing: the table is not new, its columns' types stay unknown
    table = pg_nodes.relname(node.relation)
    catalog.created.add(table)
    for element in node.tableElts or ():
        if type(element).__name__ == "ColumnDef":
            catalog.types[(table, element.colname)] = pg_nodes.type_name(element.typeName)
    if node.partbound is not None:
        return [unknown("CREATE TABLE ... PARTITION OF")]
    return []


def _pg_create_table_as(node: Any, catalog: Catalog) -> Verdict:
    if not node.if_not_exists:  # IF NOT EXISTS may do nothing: the table is not known new
        catalog.created.add(pg_nodes.relname(node.into.rel))
    return []


def _pg_index(node: Any, catalog: Catalog) -> Verdict:
    table = pg_nodes.relname(node.relation)
    if node.concurrent or table in catalog.created:
        return []
    message = "builds an index under a lock that blocks writes for the whole build"
    name = node.idxname or "index"
    return [hit(Rule.REQUIRE_CONCURRENT_INDEX_CREATION, message, f"create index {name}")]


def _pg_insert(node: Any, _catalog: Catalog) -> Verdict:
    conflict = node.onConflictClause
    from pglast.enums import OnConflictAction

    if conflict is not None and conflict.action == OnConflictAction.ONCONFLICT_UPDATE:
        table = pg_nodes.relname(node.relation)
        message = "INSERT ... ON CONFLICT DO UPDATE overwrites existing values"
        return [hit(Rule.UPDATE_ROWS, message, f"update rows of {table}")]
    return []


def _pg_update(node: Any, catalog: Catalog) -> Verdict:
    """Safe only as a backfill: each column it sets is required to be NULL by its WHERE, or
    was added (or its table created) by this revision."""
    table = pg_nodes.relname(node.relation)
    targets = {target.name for target in node.targetList or ()}
    nulls = _pg_is_null_columns(node.whereClause)
    if targets and targets <= nulls and not node.fromClause:
        return []
    if targets and filled_in(catalog, table, targets):
        return []
    message = "overwrites existing values (only a backfill of NULLs passes without consent)"
    return [hit(Rule.UPDATE_ROWS, message, f"update rows of {table}")]


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
    table = pg_nodes.relname(node.relation)
    return [hit(Rule.DELETE_ROWS, "deletes rows", f"delete rows of {table}")]


def _pg_truncate(node: Any, _catalog: Catalog) -> Verdict:
    tables = ", ".join(pg_nodes.relname(relation) for relation in node.relations)
    return [hit(Rule.TRUNCATE, "deletes every row of a table", f"truncate {tables}")]


def _pg_merge(node: Any, _catalog: Catalog) -> Verdict:
    table = pg_nodes.relname(node.relation)
    message = "MERGE updates or deletes existing rows"
    return [hit(Rule.UPDATE_ROWS, message, f"merge into {table}")]


def _pg_rename(node: Any, _catalog: Catalog) -> Verdict:
    old = pg_nodes.relname(node.relation) if node.relation is not None else ""
    what = f"{old}.{node.subname}" if node.subname else old
    message = "renames a table, column or index (breaks code still using the old name)"
    return [hit(Rule.RENAME, message, f"rename {what} to {node.newname}".strip())]


def _pg_select(node: Any, _catalog: Catalog) -> Verdict:
    if node.intoClause is not None:
        return [unknown("SELECT INTO")]
    return []  # nested writes and function calls are judged by nested


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
        return [hit(Rule.UNKNOWN_SETTING, message, resets[node.kind])]
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
    if name not in allowlists.SAFE_SETTINGS:
        message = f"changes the setting {name}, whose effect on the migration is not known"
        return [hit(Rule.UNKNOWN_SETTING, message, f"set {name}")]
    if name in allowlists.TIMEOUT_SETTINGS and not all(
        _positive_duration(value) for value in values
    ):
        message = f"sets {name} to 0 or a value not read literally: the timeout guard is off"
        return [hit(Rule.TIMEOUT_OFF, message, f"set {name}")]
    return []


# Milliseconds per unit of a PostgreSQL duration setting (a bare number is milliseconds).
_MILLISECONDS = {
    "": 1.0,
    "us": 0.001,
    "ms": 1.0,
    "s": 1000.0,
    "min": 60000.0,
    "h": 3.6e6,
    "d": 8.64e7,
}


def _positive_duration(value: Any) -> bool:
    """`5`, `'4s'`, `'30min'`: a literal duration PostgreSQL stores as at least 1 ms.

    The timeouts are kept in whole milliseconds: `'0.4ms'` or `'100us'` is stored as 0, which
    means no timeout at all. Anything not read literally is not proven, so not positive."""
    if isinstance(value, bool) or value is None:
        return False
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|ms|s|min|h|d)?\s*", str(value))
    if match is None:
        return False
    return float(match.group(1)) * _MILLISECONDS[match.group(2) or ""] >= 1


def _pg_do(node: Any, _catalog: Catalog) -> Verdict:
    """A DO block always needs consent; PL/pgSQL's own parser says what it was seen to run."""
    options = {item.defname: getattr(item.arg, "sval", None) for item in node.args or ()}
    seen = _plpgsql_contents(options.get("as") or "", options.get("language") or "plpgsql")
    detail = f"; it {seen}" if seen else ""
    message = f"runs a procedural block (DO) whose effect cannot be known statically{detail}"
    return [hit(Rule.PROCEDURAL_BLOCK, message, "DO block")]


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
        for _rule, _severity, _message, subject in judge(query, Catalog()):
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
    """A function or procedure is code that runs wherever it is called later (a default, a
    check, a view, an index, an overload of a built-in name): its definition needs consent."""
    name = ".".join(part.sval for part in node.funcname or ())
    what = "procedure" if node.is_procedure else "function"
    verdict = [hit(Rule.DEFINE_ROUTINE, f"defines a {what}", f"define {what} {name}")]
    if node.replace:
        message = f"replaces a {what} that existing code and triggers may call"
        verdict.append(hit(Rule.REPLACE_OBJECT, message, f"replace {what} {name}"))
    return verdict


def _pg_definition(node: Any, _catalog: Catalog) -> Verdict:
    """Triggers, rules, operators, casts, aggregates, languages: code the server runs later."""
    what = _pg_kind_name(node).lower()
    return [hit(Rule.DEFINE_ROUTINE, f"{what}: defines code the server runs later", what)]


def _pg_grant_role(node: Any, _catalog: Catalog) -> Verdict:
    verb = "grants" if node.is_grant else "revokes"
    roles = ", ".join(getattr(role, "rolename", None) or "?" for role in node.granted_roles or ())
    message = f"{verb} role membership ({roles}): privileges are not the revision's to change"
    return [hit(Rule.GRANT_ROLE, message, f"{verb.removesuffix('s')} role {roles}")]


def _pg_lock(node: Any, _catalog: Catalog) -> Verdict:
    """LOCK TABLE in SHARE mode or stronger stops writers (ACCESS EXCLUSIVE: readers too) until
    the revision commits; the weaker modes are what ordinary statements take anyway."""
    if node.mode < 5:  # ACCESS SHARE .. SHARE UPDATE EXCLUSIVE
        return []
    tables = ", ".join(pg_nodes.relname(relation) for relation in node.relations or ())
    message = "locks a table in a mode that blocks writes for the rest of the revision"
    return [hit(Rule.STRONG_LOCK, message, f"lock {tables}")]


def _pg_view(node: Any, _catalog: Catalog) -> Verdict:
    if node.replace:
        message = "replaces a view that existing code may read"
        return [hit(Rule.REPLACE_OBJECT, message, f"replace view {pg_nodes.relname(node.view)}")]
    return []


def _pg_alter_enum(node: Any, _catalog: Catalog) -> Verdict:
    if node.oldVal:
        message = "renames an enum value (breaks code and rows still using it)"
        return [hit(Rule.RENAME, message, f"rename enum value {node.oldVal}")]
    return []


def _pg_alter_sequence(node: Any, _catalog: Catalog) -> Verdict:
    options = {option.defname for option in node.options or ()}
    if options <= {"owned_by", "increment", "cache", "maxvalue", "minvalue", "as"}:
        return []
    message = "restarts or changes a sequence (may hand out keys already in use)"
    return [hit(Rule.ALTER_SEQUENCE, message, f"alter sequence {pg_nodes.relname(node.sequence)}")]


def _pg_call(node: Any, _catalog: Catalog) -> Verdict:
    message = "calls a procedure whose effect cannot be known statically"
    return [hit(Rule.FUNCTION_CALL, message, "call a procedure")]


def _pg_execute(_node: Any, _catalog: Catalog) -> Verdict:
    message = "runs a prepared statement (dynamic SQL) whose effect cannot be known statically"
    return [hit(Rule.DYNAMIC_SQL, message, "EXECUTE")]


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
    "CreateTrigStmt": _pg_definition,
    "CreateEventTrigStmt": _pg_definition,
    "RuleStmt": _pg_definition,
    "DefineStmt": _pg_definition,
    "CreateCastStmt": _pg_definition,
    "CreatePLangStmt": _pg_definition,
    "CreateOpClassStmt": _pg_definition,
    "CreateTransformStmt": _pg_definition,
    "CreateConversionStmt": _pg_definition,
    "GrantRoleStmt": _pg_grant_role,
    "LockStmt": _pg_lock,
    "ViewStmt": _pg_view,
    "AlterEnumStmt": _pg_alter_enum,
    "AlterSeqStmt": _pg_alter_sequence,
    "CallStmt": _pg_call,
    "ExecuteStmt": _pg_execute,
    "AlterTableStmt": postgres_alter.alter_table,
}


def nested(node: Any, catalog: Catalog | None = None) -> Verdict:
    """Writes hidden inside a statement (a DELETE in a CTE) and calls of unknown functions."""
    shadowed = catalog.shadowed if catalog is not None else frozenset()
    found: Verdict = []
    for inner in pg_nodes.walk(node):
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
            elif not trusted_call([part.sval for part in inner.funcname], shadowed):
                message = f"calls {name}(), which may write: its effect cannot be known statically"
                found.append(hit(Rule.FUNCTION_CALL, message, f"call {name}()"))
    return found


def trusted_call(name: list[str], shadowed: frozenset[str] | set[str] = frozenset()) -> bool:
    """Whether a call of `name` (as written: `lower`, `pg_catalog.lower`) reaches a built-in.

    Qualified with `pg_catalog` it does (only a superuser creates functions there). Unqualified,
    PostgreSQL picks among every function of that name on the search_path by argument types, so
    a user's `lower(integer)` beats the built-in `lower(text)` for an integer: an unqualified
    allow-listed name is trusted only while no function of that name exists outside the system
    schemas (`shadowed`, read from the database; a revision defining one needs consent).
    """
    words = [word.lower() for word in name]
    if len(words) == 2 and words[0] == "pg_catalog":
        return words[1] in allowlists.SAFE_FUNCTIONS | allowlists.CATALOG_FUNCTIONS
    return len(words) == 1 and words[0] in allowlists.SAFE_FUNCTIONS and words[0] not in shadowed


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
        return [hit(Rule.UNKNOWN_SETTING, message, "call set_config()")]
    return _setting_verdict(setting.lower(), [_pg_const(args[1])])


def _pg_in_definition(node: Any) -> bool:
    """Statements whose function calls are not run now: a function's definition (which needs
    consent itself, as `define-routine`).

    Defaults, checks, views and index expressions are not exempt: an unknown function there
    runs on every future insert, read or index build, so it is as unknown as one called now.
    """
    return type(node).__name__ == "CreateFunctionStmt"


def transaction_kind(text: str) -> str:
    node = parse(text)
    if node is None or type(node).__name__ != "TransactionStmt":
        return ""
    return node.kind.name.removeprefix("TRANS_STMT_")


def is_transaction(text: str) -> bool:
    return transaction_kind(text) != ""
