"""PostgreSQL's ALTER TABLE judged command by command: what rewrites, what locks, what loses data.

The catalog matters most here: a table created in the same revision needs no CONCURRENTLY or
NOT VALID, a column's current type decides whether a retype widens, and a check validated
earlier lets SET NOT NULL skip its scan (the validated-check pattern).
"""

from __future__ import annotations

import re
from typing import Any

from tasks.lint import allowlists, pg_nodes
from tasks.lint.findings import Catalog, Statement, Verdict, unknown
from tasks.lint.rules import Rule, hit


def alter_table(node: Any, catalog: Catalog) -> Verdict:
    from pglast.enums import AlterTableType as At
    from pglast.enums import ObjectType

    table = pg_nodes.relname(node.relation)
    if node.objtype != ObjectType.OBJECT_TABLE:
        return [unknown(f"ALTER {node.objtype.name.removeprefix('OBJECT_')}")]
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
    return hit(Rule.CONSTRAINT_MISSING_NOT_VALID, message, f"validate {table}.{name}")


def _pg_alter_command(table: str, command: Any, catalog: Catalog) -> Verdict:
    from pglast.enums import AlterTableType as At

    subtype = command.subtype
    new = table in catalog.created
    column = command.name
    if subtype == At.AT_AddColumn:
        return _pg_add_column(table, command.def_, catalog)
    if subtype == At.AT_DropColumn:
        message = "drops a column and its data"
        return [hit(Rule.DROP_COLUMN, message, f"drop column {table}.{column}")]
    if subtype == At.AT_AlterColumnType:
        return _pg_alter_type(table, column, command.def_, catalog)
    if subtype == At.AT_SetNotNull:
        catalog.not_null.add((table, column))
        if new or (table, column) in catalog.validated:
            return []
        message = "makes a column NOT NULL with a full scan under an ACCESS EXCLUSIVE lock"
        return [hit(Rule.SET_NOT_NULL, message, f"set not null {table}.{column}")]
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
        if catalog.live and (table, column) in catalog.constraints_added:
            # op.drop_unvalidated_constraint on the run: a NOT VALID leftover of this same
            # revision's failed run (the plan shows only a comment there); it adds it again.
            return []
        message = "drops a constraint (the guarantee it gave is gone)"
        return [hit(Rule.DROP_CONSTRAINT, message, f"drop constraint {table}.{column}")]
    return [unknown(f"ALTER TABLE {subtype.name.removeprefix('AT_')}")]


def _pg_add_column(table: str, definition: Any, catalog: Catalog) -> Verdict:
    """Nullable, or with a constant default (PostgreSQL 11+ stores it, no rewrite): safe."""
    from pglast.enums import ConstrType

    column = definition.colname
    catalog.types[(table, column)] = pg_nodes.type_name(definition.typeName)
    catalog.added.add((table, column))
    if table in catalog.created:
        return []
    constraints = {constraint.contype: constraint for constraint in definition.constraints or ()}
    default = constraints.get(ConstrType.CONSTR_DEFAULT)
    subject = f"add column {table}.{column}"
    if pg_nodes.type_name(definition.typeName) in {"serial", "bigserial", "smallserial"}:
        message = "adds a serial column: every existing row is rewritten with a new value"
        return [hit(Rule.ADDING_SERIAL_PRIMARY_KEY_FIELD, message, subject)]
    if default is not None and _pg_volatile(default.raw_expr):
        message = "adds a column with a volatile default: the table is rewritten under a lock"
        return [hit(Rule.ADDING_FIELD_WITH_DEFAULT, message, subject)]
    if ConstrType.CONSTR_GENERATED in constraints or ConstrType.CONSTR_IDENTITY in constraints:
        message = "adds a generated or identity column: the table is rewritten under a lock"
        return [hit(Rule.ADDING_FIELD_WITH_DEFAULT, message, subject)]
    if ConstrType.CONSTR_NOTNULL in constraints and default is None:
        message = "adds a NOT NULL column without a default: fails on a table with rows"
        return [hit(Rule.ADDING_REQUIRED_FIELD, message, subject)]
    if {ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_UNIQUE} & constraints.keys():
        message = "adds a unique column: its index is built under a lock that blocks writes"
        return [hit(Rule.DISALLOWED_UNIQUE_CONSTRAINT, message, subject)]
    if {ConstrType.CONSTR_FOREIGN, ConstrType.CONSTR_CHECK} & constraints.keys():
        message = "adds a column with a constraint validated under a lock"
        return [hit(Rule.CONSTRAINT_MISSING_NOT_VALID, message, subject)]
    return []


def _pg_volatile(expression: Any) -> bool:
    """Whether a default is evaluated per row: any function but the stable few is volatile."""
    for node in pg_nodes.walk(expression):
        if type(node).__name__ == "FuncCall":
            name = node.funcname[-1].sval.lower()
            if name in allowlists.VOLATILE_DEFAULTS or name not in allowlists.SAFE_FUNCTIONS:
                return True
    return False


def _pg_alter_type(table: str, column: str, definition: Any, catalog: Catalog) -> Verdict:
    """Widening a varchar (or to text) rewrites nothing; anything else needs consent."""
    new_type = pg_nodes.type_name(definition.typeName)
    old_type = catalog.column_type(table, column)
    catalog.types[(table, column)] = new_type
    if table in catalog.created or (definition.raw_default is None and _widens(old_type, new_type)):
        return []
    message = "changes a column's type (may rewrite the table or truncate values)"
    was = f" from {old_type}" if old_type else ""
    subject = f"change type of {table}.{column}{was} to {new_type}"
    return [hit(Rule.CHANGE_COLUMN_TYPE, message, subject)]


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
            Rule.ADDING_FOREIGN_KEY_CONSTRAINT
            if kind == ConstrType.CONSTR_FOREIGN
            else Rule.CONSTRAINT_MISSING_NOT_VALID
        )
        message = "validates every row under a lock that blocks writes (add it NOT VALID)"
        return [hit(rule, message, subject)]
    if kind in {ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY}:
        if constraint.indexname:
            return []  # USING INDEX: the index was built (concurrently) beforehand
        message = "builds a unique index under a lock that blocks writes"
        return [hit(Rule.DISALLOWED_UNIQUE_CONSTRAINT, message, subject)]
    return [unknown(f"ADD CONSTRAINT {kind.name.removeprefix('CONSTR_')}")]


def constraints_added(parts: list[Statement]) -> set[tuple[str, str]]:
    """(table, name) of every `ADD CONSTRAINT name` in the revision."""
    from pglast.enums import AlterTableType as At

    found: set[tuple[str, str]] = set()
    for part in parts:
        node = None if part.bookkeeping else pg_nodes.parse(part.text)
        if node is None or type(node).__name__ != "AlterTableStmt":
            continue
        for command in node.cmds or ():
            name = getattr(command.def_, "conname", None)
            if command.subtype == At.AT_AddConstraint and name:
                found.add((pg_nodes.relname(node.relation), name))
    return found


def not_null_checks_added(parts: list[Statement]) -> set[tuple[str, str]]:
    """(table, name) of every `ADD CONSTRAINT name CHECK (col IS NOT NULL)` in the revision."""
    from pglast.enums import AlterTableType as At
    from pglast.enums import ConstrType

    found: set[tuple[str, str]] = set()
    for part in parts:
        node = None if part.bookkeeping else pg_nodes.parse(part.text)
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
                found.add((pg_nodes.relname(node.relation), constraint.conname))
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
