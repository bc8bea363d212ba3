"""A revision's Python source read for what it would run: the fallback when its SQL cannot be
rendered offline, and the second opinion on a revision that runs differently online.

Fails closed like the SQL classifier: every `op.<name>(...)` call is judged by the operation,
`op.execute` by the classifier when its SQL is a literal, and anything else (SQL built at run
time, other uses of the connection, dynamic code, unknown operations) needs consent.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from typing import Any, TypeGuard

from tasks.lint.findings import Finding
from tasks.lint.rules import Rule, severity
from tasks.lint.sql import classify

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
    "drop_table": Rule.DROP_TABLE,
    "drop_column": Rule.DROP_COLUMN,
    "drop_index": Rule.DROP_INDEX,
    "drop_constraint": Rule.DROP_CONSTRAINT,
    "rename_table": Rule.RENAME,
    "drop_table_comment": Rule.DROP_OBJECT,
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
        return [_source_finding(Rule.UNPARSABLE, message, "", why)]
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
        if rule in ignored or (rule, line) in seen:
            continue
        seen.add((rule, line))
        findings.append(_source_finding(rule, message, line, why))
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
) -> Iterator[tuple[str, str, str]]:
    """(rule, message, source line) for every operation in `body` needing consent."""
    import ast

    def line_of(node: Any) -> str:
        return lines[node.lineno - 1].strip() if node.lineno <= len(lines) else ""

    for node, rule, message in _source_evasions(body):
        yield rule, message, line_of(node)
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
            yield Rule.UNKNOWN_STATEMENT, message, line_of(name)
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
            verdict = [(Rule.CONNECTION_USE, message)]
        elif isinstance(node, ast.Call) and _is_op_call(node, "get_context"):
            if id(node) in receivers:
                continue  # judged by the attribute asked of it
            verdict = [(Rule.UNKNOWN_STATEMENT, "op.get_context() kept for later use")]
        elif (
            isinstance(node, ast.Attribute)
            and _is_op_call(node.value, "get_context")
            and node.attr not in _SAFE_CONTEXT_ATTRIBUTES
        ):
            message = f"op.get_context().{node.attr} is not known to be safe"
            verdict = [(Rule.UNKNOWN_STATEMENT, message)]
        elif (
            _is_op_call(node)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr != "get_bind"
        ):
            verdict = _judge_call(node.func.attr, node, dialect, created)
        else:
            continue
        for rule, message in verdict:
            yield rule, message, line_of(node)


def _source_evasions(body: Any) -> Iterator[tuple[Any, str, str]]:
    """(node, rule, message) for what hides an operation from the scan: op's members
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
                        yield node, Rule.UNKNOWN_STATEMENT, message
            elif module.split(".")[0] == "alembic" and module != "alembic.context":
                message = f"imports from {module}: operations used other than as op.<operation>"
                yield node, Rule.UNKNOWN_STATEMENT, message
            elif module.split(".")[0] in _DYNAMIC_MODULES:
                message = f"imports from {module}: code chosen at run time cannot be read"
                yield node, Rule.DYNAMIC_CODE, message
        elif isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top == "alembic":
                    message = f"import {alias.name}: operations used other than as op.<operation>"
                    yield node, Rule.UNKNOWN_STATEMENT, message
                elif top in _DYNAMIC_MODULES:
                    message = f"import {alias.name}: code chosen at run time cannot be read"
                    yield node, Rule.DYNAMIC_CODE, message
        elif isinstance(node, ast.Name) and node.id in _DYNAMIC_CALLS:
            message = f"{node.id}(): code built at run time cannot be read"
            yield node, Rule.DYNAMIC_CODE, message
        elif isinstance(node, ast.Name) and node.id in _DYNAMIC_ATTRIBUTES:
            message = f"{node.id}(): an attribute chosen at run time cannot be resolved"
            yield node, Rule.UNKNOWN_STATEMENT, message
        elif isinstance(node, ast.Attribute) and node.attr in _DUNDERS:
            message = f".{node.attr}: reaches objects the scan cannot resolve"
            yield node, Rule.DYNAMIC_CODE, message


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


def _source_finding(rule: str, message: str, line: str, why: str = _RENDER_FAILED) -> Finding:
    text = f"{why}: {message}"
    return Finding(rule, severity(rule), text, line, "source", subject=rule.replace("-", " "))


SourceVerdict = list[tuple[str, str]]  # (rule, message); the registry gives the severity


def _judge_call(operation: str, call: Any, dialect: str, created: set[str]) -> SourceVerdict:
    """One `op.<operation>(...)` call: the allow-list for revisions read from source."""
    import ast

    if operation in _SOURCE_RULES:
        return [(_SOURCE_RULES[operation], operation.replace("_", " "))]
    if operation == "alter_column":
        return _judge_alter_column(call)
    if operation == "execute":
        argument = call.args[0] if call.args else None
        if isinstance(argument, ast.Call) and _called(argument) == "text":
            argument = argument.args[0] if argument.args else None
        if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
            return [
                (finding.rule, f"op.execute: {finding.message}")
                for finding in classify(argument.value, dialect)
            ]
        return [(Rule.DYNAMIC_SQL, "op.execute with SQL that is not a literal")]
    if operation in _SAFE_OPS:
        return _pg_source_locks(operation, call, created) if dialect == "postgresql" else []
    message = f"op.{operation} is not an operation known to be safe"
    return [(Rule.UNKNOWN_STATEMENT, message)]


def _judge_alter_column(call: Any) -> SourceVerdict:
    import ast

    keywords = {keyword.arg: keyword.value for keyword in call.keywords}
    found: list[tuple[str, str]] = []
    if "type_" in keywords:
        found.append((Rule.CHANGE_COLUMN_TYPE, "alter_column with type_"))
    nullable = keywords.get("nullable")
    if nullable is not None and not (isinstance(nullable, ast.Constant) and nullable.value is True):
        found.append((Rule.SET_NOT_NULL, "alter_column with nullable=False"))
    if "new_column_name" in keywords:
        found.append((Rule.RENAME, "alter_column with new_column_name"))
    allowed = {"type_", "nullable", "new_column_name", "comment", "server_default", "schema"}
    if set(keywords) - allowed - {k for k in keywords if k and k.startswith("existing_")}:
        message = "alter_column with options not known to be safe"
        found.append((Rule.UNKNOWN_STATEMENT, message))
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
        return [(Rule.REQUIRE_CONCURRENT_INDEX_CREATION, message)]
    if operation in {"create_foreign_key", "create_check_constraint"} and not _literal(
        keywords.get("postgresql_not_valid")
    ):
        rule = (
            Rule.ADDING_FOREIGN_KEY_CONSTRAINT
            if operation == "create_foreign_key"
            else Rule.CONSTRAINT_MISSING_NOT_VALID
        )
        return [(rule, f"{operation} without postgresql_not_valid=True")]
    if operation in {"create_unique_constraint", "create_primary_key"}:
        message = f"{operation} builds its index under a lock that blocks writes"
        return [(Rule.DISALLOWED_UNIQUE_CONSTRAINT, message)]
    if operation == "add_column":
        return _pg_source_add_column(call)
    return []


def _pg_source_add_column(call: Any) -> SourceVerdict:
    """`sa.Column(..., nullable=False)` without a server default fails on a table with rows."""
    import ast

    position = 0 if call.func.value.id == "batch_op" else 1  # batch_op knows its table
    column = call.args[position] if len(call.args) > position else None
    if not isinstance(column, ast.Call):
        return [(Rule.UNKNOWN_STATEMENT, "add_column with a column not written out")]
    keywords = {keyword.arg: keyword.value for keyword in column.keywords}
    required = _literal(keywords.get("nullable")) is False or _literal(keywords.get("primary_key"))
    if required and "server_default" not in keywords:
        message = "add_column of a NOT NULL column without a server default"
        return [(Rule.ADDING_REQUIRED_FIELD, message)]
    return []


def _literal(node: Any) -> Any:
    """The value of a literal in the source (a string, True, 3), None for anything else."""
    import ast

    return node.value if isinstance(node, ast.Constant) else None


def _called(call: Any) -> str:
    """`text` for `text(...)` and `sa.text(...)`."""
    func = call.func
    return str(getattr(func, "id", None) or getattr(func, "attr", ""))
