"""`local.sync`: bring a local database up to the models by adding what is missing, never more.

Developers want their database to match the models in seconds, without writing revisions and
without losing rows. Sync compares (`tasks.schema.fast_diff`, Alembic's rules, bulk reflection),
sorts
the differences into what it can add safely and what only a revision or a manual step can do,
and applies the first kind in one transaction (where the dialect has transactional DDL), checking
before it commits that nothing it meant to add is still missing. It never drops, renames or
rewrites anything.

Exit codes (see `tasks.core.errors.ExitCode`):
  `--check`: 0 in sync; 4 only differences sync can apply; 5 differences that need a revision or
  a manual step (possibly alongside some sync can apply).
  sync: 0 the database now matches the models; 5 sync applied what it could and committed, the
  rest needs a revision; 1 applying failed and nothing was changed.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core.console import plural
from tasks.core.errors import DatabaseError, DifferencesFound, ExitCode
from tasks.core.session import Session

if TYPE_CHECKING:
    from sqlalchemy import Column, MetaData, Table
    from sqlalchemy.engine import Connection

    from tasks.core.comparison import Comparison
    from tasks.schema.fast_diff import Change

ADD = "add"  # sync can apply it
LEAVE = "leave"  # sync will not touch it: a revision or a manual step


@dataclass
class Item:
    """One difference as people read it: a kind, its table, and what sync does about it."""

    kind: str
    table: str
    name: str | None
    detail: str
    operation: str  # the Alembic operation a revision would use
    changes: tuple[Change, ...]
    schema: str | None = None
    action: str = LEAVE
    reason: str | None = None
    inline_with: Item | None = field(default=None, repr=False)  # FK added with its column

    @property
    def can_apply(self) -> bool:
        return self.action == ADD

    @property
    def alembic_keys(self) -> list[tuple[str, ...]]:
        return [change.key for change in self.changes]

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "table": self.table,
            "schema": self.schema,
            "name": self.name,
            "detail": self.detail,
            "sync": self.can_apply,
            "reason": self.reason,
            "operation": self.operation,
            "alembic": [list(key) for key in self.alembic_keys],
        }


@dataclass
class SyncPlan:
    """Every difference, sorted into what sync adds and what it leaves alone."""

    dialect: str
    items: list[Item]

    @property
    def to_apply(self) -> list[Item]:
        return [item for item in self.items if item.can_apply]

    @property
    def left_alone(self) -> list[Item]:
        return [item for item in self.items if not item.can_apply]

    @property
    def exit_code(self) -> ExitCode:
        if self.left_alone:
            return ExitCode.NEEDS_REVISION
        return ExitCode.DIFFERENCES if self.items else ExitCode.OK

    @property
    def status(self) -> str:
        return {
            ExitCode.OK: "in_sync",
            ExitCode.DIFFERENCES: "sync_can_apply",
            ExitCode.NEEDS_REVISION: "needs_revision",
        }[self.exit_code]


# --- tasks' core functions ----------------------------------------------------------------------


# What sync does about the revision history once the database matches the models (recorded
# by a layer above that knows the history): `{"state": ..., "message": ...}` or None.
HistoryHook = Callable[[Session, "Connection"], "dict[str, Any] | None"]


def sync(
    session: Session,
    *,
    check: bool = False,
    backup: bool = False,
    as_json: bool = False,
    history: HistoryHook | None = None,
) -> SyncPlan:
    """`local.sync`: report (`check`) or apply the additive differences, then report the rest.

    Sync keeps no revision history of its own: `history`, when given, is asked once the
    database matches the models (it stamps the history's head when that is what sync built, or
    says the one next step), and its answer is part of the report."""
    from tasks.core import env_comparison

    metadata = session.metadata()
    nothing_to_back_up = _sqlite_file_missing(session)
    with _connection(session, read_only=check) as connection:
        rules = env_comparison.for_session(session, connection)
        plan = _compare(session, connection, metadata, rules)
        session.record.details["differences"] = _counts(plan)
        if check or not plan.to_apply:
            connection.rollback()
            recorded = _history(session, connection, plan, history, check=check)
            _report(session, plan, applied=[], backup_path=None, as_json=as_json, history=recorded)
            _raise_for(session, plan, applied=False)
            return plan
        backup_path = None
        if backup:
            backup_path = _backup_first(session, as_json=as_json, missing=nothing_to_back_up)
        applied = plan.to_apply
        remaining = apply_plan(session, connection, metadata, plan, rules)
        recorded = _history(session, connection, remaining, history, check=False)
    _report(
        session,
        remaining,
        applied=applied,
        backup_path=backup_path,
        as_json=as_json,
        history=recorded,
    )
    _raise_for(session, remaining, applied=True)
    return remaining


def _history(
    session: Session,
    connection: Connection,
    plan: SyncPlan,
    hook: HistoryHook | None,
    *,
    check: bool,
) -> dict[str, Any] | None:
    """The history hook's answer, asked only when the database matches the models and only
    when sync may write (a check reports, never stamps)."""
    if hook is None or check or plan.exit_code != ExitCode.OK:
        return None
    recorded = hook(session, connection)
    if recorded:
        session.record.details["revision_history"] = recorded
    return recorded


def reset(session: Session, *, backup: bool = False) -> None:
    """`local.reset`: drop everything in the database and create it again from the models."""
    environment = session.environment
    metadata = session.metadata()
    session.confirm(
        f"Drop every table in the {environment.name} database ({environment.masked_url}) "
        "and recreate it from the models"
    )
    if backup:
        _backup_first(session, as_json=False, missing=_sqlite_file_missing(session))
    with session.connect() as connection:
        _warn_if_not_transactional(session, connection)
        try:
            dropped = _drop_everything(connection, metadata)
            metadata.create_all(connection, checkfirst=True)
            connection.commit()
        except Exception as error:
            connection.rollback()
            raise _apply_error(session, "reset", error) from None
    created = len(metadata.tables)
    session.record.details.update({"dropped_tables": dropped, "created_tables": created})
    session.console.line(
        f"{environment.name}: dropped {plural(len(dropped), 'table')}, "
        f"created {created} from the models"
    )
    session.console.line(
        f"{environment.name}: no revision is recorded now; "
        f"if the models are at head, `{_stamp_command(session)}`"
    )


# --- planning -----------------------------------------------------------------------------------


def _compare(
    session: Session, connection: Connection, metadata: MetaData, rules: Comparison | None = None
) -> SyncPlan:
    """make_plan, with a database error turned into one masked line."""
    from sqlalchemy.exc import SQLAlchemyError

    from tasks.core.engines import describe_database_error

    try:
        return make_plan(connection, metadata, rules)
    except SQLAlchemyError as error:
        raise DatabaseError(
            f"cannot compare the models with the {session.environment.name} database: "
            f"{describe_database_error(error)}"
        ) from None


def make_plan(
    connection: Connection, metadata: MetaData, rules: Comparison | None = None
) -> SyncPlan:
    """Compare (under the project's comparison rules), group the changes into items, and
    decide which ones sync can apply."""
    from tasks.schema import fast_diff as sync_diff

    changes = sync_diff.compare(connection, metadata, comparison=rules)
    plan = SyncPlan(connection.dialect.name, group(changes, connection.dialect))
    _classify(plan, connection)
    return plan


def group(changes: list[Change], dialect: Any) -> list[Item]:
    """Alembic-style changes as items: a new table with its indexes, renames as one item."""
    by_table: dict[tuple[str | None, str], list[Change]] = defaultdict(list)
    for change in changes:
        by_table[(change.schema, change.table)].append(change)
    items: list[Item] = []
    for (_schema, _table), table_changes in sorted(by_table.items(), key=_table_sort_key):
        items.extend(_group_table(table_changes, dialect))
    return items


def _table_sort_key(entry: tuple[tuple[str | None, str], list[Change]]) -> tuple[str, str]:
    (schema, table), _ = entry
    return (schema or "", table)


def _group_table(changes: list[Change], dialect: Any) -> list[Item]:
    ops = defaultdict(list)
    for change in changes:
        ops[change.op].append(change)
    if ops["add_table"]:
        return [_new_table_item(ops["add_table"][0], ops["add_index"])]
    if ops["remove_table"]:
        return [_dropped_table_item(ops["remove_table"][0], ops["remove_index"])]
    items: list[Item] = []
    items.extend(_pair_indexes_and_uniques(ops))
    items.extend(_pair_foreign_keys(ops))
    for change in changes:
        if change.op in _LEFTOVER_OPS and change in ops[change.op]:
            items.append(_single_item(change, dialect))
    return items


_LEFTOVER_OPS = (
    "add_column",
    "remove_column",
    "modify_type",
    "modify_nullable",
    "modify_default",
    "modify_comment",
    "add_table_comment",
    "remove_table_comment",
    "add_index",
    "remove_index",
    "add_constraint",
    "remove_constraint",
    "add_fk",
    "remove_fk",
)


def _take(ops: dict[str, list[Change]], op: str, change: Change) -> None:
    ops[op].remove(change)


def _pair_indexes_and_uniques(ops: dict[str, list[Change]]) -> list[Item]:
    """A drop and a create of the same name is a change; of the same columns, a rename."""
    items: list[Item] = []
    removed = [*ops["remove_index"], *ops["remove_constraint"]]
    added = [*ops["add_index"], *ops["add_constraint"]]
    # Names first: a same-named pair is a change even when another pair has the same columns.
    for matches, build in ((_same_name, _changed_index_item), (_same_shape, _renamed_index_item)):
        for old in list(removed):
            new = next((n for n in added if matches(old, n)), None)
            if new is None:
                continue
            removed.remove(old)
            added.remove(new)
            _take(ops, old.op, old)
            _take(ops, new.op, new)
            items.append(build(old, new))
    return items


def _same_name(old: Change, new: Change) -> bool:
    return bool(new.name) and new.name == old.name


def _same_shape(old: Change, new: Change) -> bool:
    """Same kind of object (index or unique constraint) on the same columns."""
    if old.op == "remove_index":
        return new.op == "add_index" and tuple(old.signature) == tuple(new.signature)
    return new.op == "add_constraint" and sorted(old.signature) == sorted(new.signature)


def _pair_foreign_keys(ops: dict[str, list[Change]]) -> list[Item]:
    """A foreign key dropped and added on the same columns and target: its options changed."""
    items: list[Item] = []
    for old in list(ops["remove_fk"]):
        new = next((n for n in ops["add_fk"] if n.signature[:6] == old.signature[:6]), None)
        if new is None:
            continue
        _take(ops, "remove_fk", old)
        _take(ops, "add_fk", new)
        items.append(
            Item(
                "foreign_key_changed",
                old.table,
                new.name or old.name,
                f"{_fk_text(old)}: options {_fk_options(old)} -> {_fk_options(new)}",
                f"op.drop_constraint({old.name!r}, {old.table!r}, type_='foreignkey'); "
                + _create_fk_op(new),
                (old, new),
                old.schema,
                reason="sync never changes an existing constraint",
            )
        )
    return items


# --- items for each kind of change --------------------------------------------------------------


def _new_table_item(change: Change, indexes: list[Change]) -> Item:
    table = change.model
    parts = [plural(len(table.columns), "column")]
    if table.indexes:
        parts.append(plural(len(table.indexes), "index", "indexes"))
    foreign_keys = len(table.foreign_key_constraints)
    if foreign_keys:
        parts.append(plural(foreign_keys, "foreign key"))
    return Item(
        "missing_table",
        change.table,
        change.table,
        f"table {change.table} ({', '.join(parts)})",
        f"op.create_table({change.table!r}, ...)",
        (change, *indexes),
        change.schema,
    )


def _dropped_table_item(change: Change, indexes: list[Change]) -> Item:
    return Item(
        "extra_table",
        change.table,
        change.table,
        f"table {change.table} is not in the models",
        f"op.drop_table({change.table!r})",
        (change, *indexes),
        change.schema,
        reason="sync never drops tables",
    )


def _single_item(change: Change, dialect: Any) -> Item:
    builder = _BUILDERS[change.op]
    try:
        kind, detail, operation, reason = builder(change, dialect)
    except Exception:  # describing must never fail where comparing did not: report it plainly
        return _plain_item(change)
    return Item(kind, change.table, change.name, detail, operation, (change,), change.schema,
                reason=reason)  # fmt: skip


def _plain_item(change: Change) -> Item:
    """A difference described by its Alembic name only, left for a revision (fail closed)."""
    where = f"{change.table}.{change.name}" if change.name else change.table
    values = (
        f": {change.before or 'none'} -> {change.after or 'none'}"
        if change.before or change.after
        else ""
    )
    return Item(
        change.op,
        change.table,
        change.name,
        f"{change.op} {where}{values}",
        "(write it with `invoke local.revision --autogenerate`)",
        (change,),
        change.schema,
        reason="sync cannot describe this difference in detail: a revision handles it",
    )


def _add_column(change: Change, dialect: Any) -> tuple[str, str, str, str | None]:
    column = change.model
    spec = f"{_type_text(column.type, dialect)} {'NULL' if column.nullable else 'NOT NULL'}"
    if column.server_default is not None:
        spec += f" DEFAULT {_model_default_text(column, dialect)}"
    return (
        "missing_column",
        f"column {change.table}.{change.name} {spec}",
        f"op.add_column({change.table!r}, {_column_repr(column)})",
        None,
    )


def _remove_column(change: Change, _dialect: Any) -> tuple[str, str, str, str | None]:
    return (
        "extra_column",
        f"column {change.table}.{change.name} is not in the models",
        f"op.drop_column({change.table!r}, {change.name!r})",
        "sync never drops columns",
    )


def _modify(change: Change, _dialect: Any) -> tuple[str, str, str, str | None]:
    """A changed column, described from the change itself: a change may come without its
    model column (an adopted project's comparator, a column the models spell differently),
    and describing a difference must never fail where comparing it did not."""
    what, argument, value = {
        "modify_type": ("type", "type_", _model_type_repr),
        "modify_nullable": ("nullability", "nullable", lambda c: repr(c.after == "NULL")),
        "modify_default": ("server default", "server_default", lambda c: _default_repr(c.after)),
        "modify_comment": ("comment", "comment", lambda c: repr(c.after)),
    }[change.op]
    return (
        change.op.replace("modify_", "") + "_changed",
        f"{what} of {change.table}.{change.name}: {change.before or 'none'} -> "
        f"{change.after or 'none'}",
        f"op.alter_column({change.table!r}, {change.name!r}, {argument}={value(change)})",
        f"sync never changes an existing column's {what}",
    )


def _model_type_repr(change: Change) -> str:
    column_type = getattr(change.model, "type", None)
    if column_type is None:
        return f"<{change.after or 'the model type'}>"
    return _type_repr(column_type)


def _table_comment(change: Change, _dialect: Any) -> tuple[str, str, str, str | None]:
    if change.op == "remove_table_comment":
        operation = f"op.drop_table_comment({change.table!r})"
    else:
        operation = f"op.create_table_comment({change.table!r}, {change.after!r})"
    return (
        "table_comment_changed",
        f"comment of table {change.table}: {change.before or 'none'} -> {change.after or 'none'}",
        operation,
        "sync never changes an existing table",
    )


def _changed_index_item(old: Change, new: Change) -> Item:
    kind = "index_changed" if new.op == "add_index" else "unique_changed"
    before = _index_text(old) if old.op == "remove_index" else _unique_text(old)
    after = _index_text(new) if new.op == "add_index" else _unique_text(new)
    return Item(
        kind,
        new.table,
        new.name,
        f"{before} -> {after}",
        f"{_drop_op(old)}; {_create_op(new)}",
        (old, new),
        new.schema,
        reason="sync never changes an existing index or constraint",
    )


def _renamed_index_item(old: Change, new: Change) -> Item:
    kind = "index_renamed" if new.op == "add_index" else "unique_renamed"
    return Item(
        kind,
        new.table,
        new.name,
        f"{old.name} -> {new.name} on {new.table}({', '.join(_columns(new))})",
        f"{_drop_op(old)}; {_create_op(new)}",
        (old, new),
        new.schema,
        reason="sync never renames anything",
    )


def _drop_op(change: Change) -> str:
    """The Alembic operation that drops a removed index, unique constraint or foreign key."""
    if change.op == "remove_index":
        return f"op.drop_index({change.name!r}, table_name={change.table!r})"
    type_ = "foreignkey" if change.op == "remove_fk" else "unique"
    return f"op.drop_constraint({change.name!r}, {change.table!r}, type_={type_!r})"


def _create_op(change: Change) -> str:
    """The Alembic operation that creates an added index, unique constraint or foreign key."""
    _kind, _text, create = _ADDED[change.op]
    return create(change)


def _columns(change: Change) -> list[str]:
    if change.op in {"add_index", "remove_index"}:
        return [str(column) for column in change.signature[1:]]
    return [str(column) for column in change.signature]


def _index_text(change: Change) -> str:
    unique = "unique index" if change.signature and change.signature[0] else "index"
    return f"{unique} {change.name} on {change.table}({', '.join(_columns(change))})"


def _unique_text(change: Change) -> str:
    name = change.name or "(unnamed)"
    return f"unique constraint {name} on {change.table}({', '.join(_columns(change))})"


def _fk_text(change: Change) -> str:
    from tasks.schema.fast_diff import fk_text

    return f"foreign key {change.name or '(unnamed)'} {fk_text(change.signature)}"


def _fk_options(change: Change) -> str:
    onupdate, ondelete, deferral = (*change.signature[6:], None, None, None)[:3]
    return f"on update {onupdate or 'no action'}, on delete {ondelete or 'no action'}" + (
        f", {deferral}" if deferral and deferral != "not deferrable" else ""
    )


def _create_index_op(change: Change) -> str:
    unique = bool(change.signature and change.signature[0])
    return (
        f"op.create_index({change.name!r}, {change.table!r}, {_columns(change)!r}, unique={unique})"
    )


def _create_unique_op(change: Change) -> str:
    return f"op.create_unique_constraint({change.name!r}, {change.table!r}, {_columns(change)!r})"


def _create_fk_op(change: Change, *, batch: bool = False) -> str:
    _schema, table, columns, _target_schema, target, target_columns = change.signature[:6]
    options = ""
    fk = change.model
    for rule in ("onupdate", "ondelete"):
        value = getattr(fk, rule, None)
        if value:
            options += f", {rule}={value!r}"
    arguments = f"{list(columns)!r}, {list(target_columns)!r}{options}"
    if batch:
        return (
            f"with op.batch_alter_table({table!r}) as batch_op: "
            f"batch_op.create_foreign_key({change.name!r}, {target!r}, {arguments})"
        )
    return f"op.create_foreign_key({change.name!r}, {table!r}, {target!r}, {arguments})"


# Index, unique constraint and foreign key changes differ only in these: an added one is applied
# (kind, description, operation); a removed one is left alone (kind, description, reason).
_ADDED: dict[str, tuple[str, Callable[[Change], str], Callable[[Change], str]]] = {
    "add_index": ("missing_index", _index_text, _create_index_op),
    "add_constraint": ("missing_unique", _unique_text, _create_unique_op),
    "add_fk": ("missing_foreign_key", _fk_text, _create_fk_op),
}
_REMOVED: dict[str, tuple[str, Callable[[Change], str], str]] = {
    "remove_index": ("extra_index", _index_text, "sync never drops indexes"),
    "remove_constraint": ("extra_unique", _unique_text, "sync never drops constraints"),
    "remove_fk": ("extra_foreign_key", _fk_text, "sync never drops constraints"),
}


def _added(change: Change, _dialect: Any) -> tuple[str, str, str, str | None]:
    kind, text, create = _ADDED[change.op]
    return kind, text(change), create(change), None


def _removed(change: Change, _dialect: Any) -> tuple[str, str, str, str | None]:
    kind, text, reason = _REMOVED[change.op]
    return kind, f"{text(change)} is not in the models", _drop_op(change), reason


_BUILDERS = {
    "add_column": _add_column,
    "remove_column": _remove_column,
    "modify_type": _modify,
    "modify_nullable": _modify,
    "modify_default": _modify,
    "modify_comment": _modify,
    "add_table_comment": _table_comment,
    "remove_table_comment": _table_comment,
    **dict.fromkeys(_ADDED, _added),
    **dict.fromkeys(_REMOVED, _removed),
}


def _batch_operation(item: Item) -> str:
    """What SQLite needs instead of ALTER TABLE ADD CONSTRAINT: a batch-mode revision."""
    change = item.changes[0]
    if item.kind == "missing_foreign_key":
        return _create_fk_op(change, batch=True)
    return (
        f"with op.batch_alter_table({item.table!r}) as batch_op: "
        f"batch_op.create_unique_constraint({change.name!r}, {_columns(change)!r})"
    )


def _type_text(type_: Any, dialect: Any) -> str:
    try:
        return dialect.type_compiler.process(type_)
    except Exception:  # a type the dialect cannot render: say what it is in Python
        return repr(type_)


def _type_repr(type_: Any) -> str:
    module = type(type_).__module__
    if module.startswith("sqlalchemy.sql") or module.startswith("sqlalchemy.types"):
        return f"sa.{type_!r}"
    if module.startswith("sqlalchemy.dialects."):
        return f"{module.split('.')[2]}.{type_!r}"
    return repr(type_)


def _default_repr(rendered: str | None) -> str:
    return "None" if rendered is None else f"sa.text({rendered!r})"


def _column_repr(column: Column[Any]) -> str:
    parts = [repr(column.name), _type_repr(column.type), f"nullable={column.nullable}"]
    if column.server_default is not None:
        parts.append(f"server_default={_default_repr(_model_default_sql(column))}")
    return f"sa.Column({', '.join(parts)})"


def _model_default_sql(column: Column[Any]) -> str | None:
    argument = getattr(column.server_default, "arg", None)
    if argument is None:
        return None
    return argument if isinstance(argument, str) else str(argument)


def _model_default_text(column: Column[Any], dialect: Any) -> str:
    compiler = dialect.ddl_compiler(dialect, None)
    return compiler.get_column_default_string(column) or str(column.server_default)


# --- what sync may apply ------------------------------------------------------------------------


def _classify(plan: SyncPlan, connection: Connection) -> None:
    """Mark the additive items sync can apply; the others get the reason they need a revision."""
    dialect = plan.dialect
    blocked: set[tuple[str, str]] = set()
    columns: dict[tuple[str, str], Item] = {}
    for item in plan.items:
        if item.kind == "missing_column":
            columns[(item.table, str(item.name))] = item
            item.reason = _unmodelled(item) or _column_blocker(
                connection, dialect, item.changes[0].model
            )
            item.action = LEAVE if item.reason else ADD
            if item.reason:
                blocked.add((item.table, str(item.name)))
    for item in plan.items:
        if item.kind == "missing_table":
            item.reason = _depends(blocked, _table_references(item))
        elif item.kind == "missing_index":
            item.reason = _depends(blocked, _index_columns(item))
        elif item.kind == "missing_unique":
            item.reason = _depends(blocked, _index_columns(item)) or _no_alter(
                dialect, "a unique constraint", item
            )
        elif item.kind == "missing_foreign_key":
            item.reason = _depends(blocked, _fk_columns(item)) or _fk_blocker(
                dialect, item, columns
            )
        else:
            continue
        item.reason = item.reason or _unmodelled(item)
        item.action = LEAVE if item.reason else ADD


def _unmodelled(item: Item) -> str | None:
    """Fail closed: an addition that arrived without the model object it adds is left alone."""
    if item.changes[0].model is None:
        return "sync cannot tell what to create for this difference: a revision adds it"
    return None


def _column_blocker(connection: Connection, dialect: str, column: Column[Any]) -> str | None:
    """Why a missing column cannot be added by sync, or None when it can."""
    from sqlalchemy import Computed, Identity

    table = column.table.name
    if column.primary_key:
        return "a new primary-key column changes the table's key: a revision decides how"
    if dialect == "sqlite" and isinstance(column.server_default, Computed | Identity):
        return "SQLite cannot add a generated column to an existing table (batch mode revision)"
    if not column.nullable and column.server_default is None:
        if dialect == "sqlite":
            return (
                "SQLite cannot add a NOT NULL column without a server default: a revision "
                "adds it with a default or fills it (batch mode)"
            )
        if _has_rows(connection, column.table):
            return (
                f"{table} has rows and the column is NOT NULL without a server default: a "
                "revision adds it nullable or with a default, fills it, then sets NOT NULL"
            )
    if dialect == "sqlite" and column.server_default is not None:
        default = _model_default_text(column, connection.dialect)
        if not _SQLITE_CONSTANT.match(default):
            return (
                f"SQLite can only add a column whose default is a constant (got {default}): "
                "a revision in batch mode recreates the table"
            )
    return None


_SQLITE_CONSTANT = re.compile(
    r"^(?:[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?|'(?:[^']|'')*'|NULL|TRUE|FALSE|X'[0-9A-F]*')$",
    re.IGNORECASE,
)


def _has_rows(connection: Connection, table: Table) -> bool:
    from sqlalchemy import literal, select

    return connection.execute(select(literal(1)).select_from(table).limit(1)).first() is not None


def _index_columns(item: Item) -> list[tuple[str, str]]:
    return [(item.table, column) for column in _columns(item.changes[0])]


def _table_references(item: Item) -> list[tuple[str, str]]:
    """Columns of other tables a new table's foreign keys point at."""
    table = item.changes[0].model
    return [
        (element.column.table.name, element.column.name)
        for fk in table.foreign_key_constraints
        for element in fk.elements
    ]


def _fk_columns(item: Item) -> list[tuple[str, str]]:
    _schema, table, columns, _target_schema, target, target_columns = item.changes[0].signature[:6]
    return [(table, c) for c in columns] + [(target, c) for c in target_columns]


def _depends(blocked: set[tuple[str, str]], needed: list[tuple[str, str]]) -> str | None:
    """Why an item waits: a column it needs is itself left for a revision."""
    for table, column in needed:
        if (table, column) in blocked:
            return f"needs column {table}.{column}, which needs a revision"
    return None


def _no_alter(dialect: str, what: str, item: Item) -> str | None:
    if dialect != "sqlite":
        return None
    item.operation = _batch_operation(item)
    return (
        f"SQLite cannot add {what} to an existing table: a revision with "
        f"op.batch_alter_table({item.table!r}) recreates the table"
    )


def _fk_blocker(dialect: str, item: Item, columns: dict[tuple[str, str], Item]) -> str | None:
    """SQLite adds a foreign key only inline, with a new single column (ADD COLUMN REFERENCES);
    SQLAlchemy cannot read ON DELETE/UPDATE or DEFERRABLE back from that form, so those wait."""
    if dialect != "sqlite":
        return None
    fk = item.changes[0].model
    fk_columns = item.changes[0].signature[2]
    column_item = columns.get((item.table, fk_columns[0])) if len(fk_columns) == 1 else None
    if column_item is None or not column_item.can_apply or fk is None:
        return _no_alter(dialect, "a foreign key", item)
    if fk.ondelete or fk.onupdate or fk.deferrable is not None or fk.initially:
        item.operation = _batch_operation(item)
        return (
            "SQLite adds a foreign key only together with its column, and its ON DELETE/ON "
            f"UPDATE/DEFERRABLE options would not read back: a revision with "
            f"op.batch_alter_table({item.table!r}) recreates the table"
        )
    item.inline_with = column_item
    return None


# --- applying -----------------------------------------------------------------------------------


def apply_plan(
    session: Session,
    connection: Connection,
    metadata: MetaData,
    plan: SyncPlan,
    rules: Comparison | None = None,
) -> SyncPlan:
    """Apply every item sync may apply in one transaction and return what is left.

    Before committing, the database is compared again: if something sync meant to add is still
    missing, everything is rolled back rather than leaving a half-synced schema.
    """
    _warn_if_not_transactional(session, connection)
    progress = ["sync"]  # what was running when something failed
    try:
        _execute(connection, plan, progress, rules)
        after = make_plan(connection, metadata, rules)
        missed = "; ".join(item.detail for item in _unexpected(plan, after)[:5])
        if missed and connection.dialect.name not in _NON_TRANSACTIONAL:
            connection.rollback()
            raise DatabaseError(
                f"sync did not converge, nothing was changed; still different: {missed}"
            )
        connection.commit()
        if missed:
            session.console.warning(f"still different after applying: {missed}")
    except DatabaseError:
        raise
    except Exception as error:
        connection.rollback()
        raise _apply_error(session, progress[-1], error) from None
    session.record.details["applied"] = [item.detail for item in plan.to_apply]
    return after


_NON_TRANSACTIONAL = frozenset({"mysql", "mariadb"})


def _unexpected(before: SyncPlan, after: SyncPlan) -> list[Item]:
    """Differences after applying that are not the ones sync meant to leave alone."""
    left = {key for item in before.left_alone for key in item.alembic_keys}
    return [item for item in after.items if not set(item.alembic_keys) <= left]


def _execute(
    connection: Connection, plan: SyncPlan, progress: list[str], rules: Comparison | None = None
) -> None:
    """Run the DDL in an order where everything exists before something refers to it."""
    from sqlalchemy.schema import CreateIndex

    by_kind = defaultdict(list)
    for item in plan.to_apply:
        by_kind[item.kind].append(item)
    inline = {id(item.inline_with): item for item in plan.to_apply if item.inline_with}
    for item in by_kind["missing_column"]:
        progress.append(item.detail)
        _add_column_ddl(connection, item, inline.get(id(item)))
    for item in by_kind["missing_unique"]:
        progress.append(item.detail)
        connection.execute(_add_constraint_ddl(item.changes[0].model))
    tables = [item.changes[0].model for item in by_kind["missing_table"]]
    if tables:  # a failure names its own statement (see _failed_statement), not every table
        progress.append(f"{_CREATING_TABLES}{plural(len(tables), 'table')}")
        _create_tables(connection, tables, rules)
    for item in by_kind["missing_index"]:
        progress.append(item.detail)
        connection.execute(CreateIndex(item.changes[0].model))
    for item in by_kind["missing_foreign_key"]:
        if item.inline_with is None:
            progress.append(item.detail)
            connection.execute(_add_constraint_ddl(item.changes[0].model))
    progress.append("checking the result")


def _create_tables(
    connection: Connection, tables: list[Table], rules: Comparison | None = None
) -> None:
    """Tables in dependency order (a table before those whose foreign keys refer to it).

    One MetaData's `create_all` sorts them (and breaks cycles with ALTERs); tables of several
    (models given as a list of MetaData) are sorted together across them. Each table comes with
    the indexes the comparison knows of (`_indexes_the_comparison_knows`), not every `Index`
    object the models hold.
    """
    from sqlalchemy.schema import sort_tables

    with _only_compared_indexes(tables, rules):
        owners = {id(table.metadata) for table in tables}
        if len(owners) == 1:
            tables[0].metadata.create_all(connection, tables=tables, checkfirst=True)
            return
        for table in sort_tables(tables):
            table.create(connection, checkfirst=True)


@contextmanager
def _only_compared_indexes(tables: list[Table], rules: Comparison | None) -> Iterator[None]:
    """While open, each table's `indexes` are the ones the comparison knows; restored after."""
    saved: list[tuple[Table, set[Any]]] = []
    for table in tables:
        kept = _indexes_the_comparison_knows(table, rules)
        if kept != table.indexes:
            saved.append((table, table.indexes))
            table.indexes = kept
    try:
        yield
    finally:
        for table, indexes in saved:
            table.indexes = indexes


def _indexes_the_comparison_knows(table: Table, rules: Comparison | None) -> set[Any]:
    """A new table's indexes as `check` sees them, so that sync converges with it.

    - Alembic keys the models' indexes by name: a name declared twice (`index=True` under a
      naming convention, and an explicit `Index` of the same name: Prefect's `ix_artifact__key`)
      is one index to compare, and is created once (`create_all` emits both and fails).
      Two different definitions under one name keep the one sorted first by its columns.
    - An index `compare.ignore` leaves out (`add_index:NAME`) is never reported by check, so
      sync does not create it either (mlflow's column-less `Index(...)`, which no database
      accepts, is lived with that way).
    """
    by_name: dict[str, Any] = {}
    unnamed = set()
    for index in sorted(table.indexes, key=_index_sort_key):
        name = index.name
        if name is None:
            unnamed.add(index)
        elif rules is not None and rules.ignored("add_index", table.name, str(name)):
            continue
        else:
            by_name.setdefault(str(name), index)
    return set(by_name.values()) | unnamed


def _index_sort_key(index: Any) -> tuple[str, bool, str]:
    return (str(index.name), bool(index.unique), ", ".join(str(e) for e in index.expressions))


def _add_column_ddl(connection: Connection, item: Item, inline_fk: Item | None) -> None:
    """ALTER TABLE ... ADD COLUMN, with the types and comments the column needs."""
    from sqlalchemy.schema import CreateColumn, SetColumnComment
    from sqlalchemy.sql.type_api import TypeEngine

    column = item.changes[0].model
    dialect = connection.dialect
    create_type = getattr(column.type, "create", None)
    if isinstance(column.type, TypeEngine) and callable(create_type):
        create_type(connection, checkfirst=True)  # PostgreSQL ENUM types and the like
    table = dialect.identifier_preparer.format_table(column.table)
    spec = str(CreateColumn(column).compile(dialect=dialect))
    if inline_fk is not None:
        spec += _inline_references(dialect, inline_fk.changes[0].model)
    connection.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {spec}")
    if column.comment and dialect.supports_comments and not dialect.inline_comments:
        connection.execute(SetColumnComment(column))


def _inline_references(dialect: Any, fk: Any) -> str:
    """` CONSTRAINT name REFERENCES parent (id) ON DELETE ...` for SQLite's ADD COLUMN."""
    compiler = dialect.ddl_compiler(dialect, None)
    preparer = dialect.identifier_preparer
    target = fk.elements[0].column.table
    columns = ", ".join(preparer.quote(element.column.name) for element in fk.elements)
    return (
        " "
        + compiler.define_constraint_preamble(fk)
        + f"REFERENCES {compiler.define_constraint_remote_table(fk, target, preparer)} ({columns})"
        + compiler.define_constraint_match(fk)
        + compiler.define_constraint_cascades(fk)
        + compiler.define_constraint_deferrability(fk)
    )


def _add_constraint_ddl(constraint: Any) -> Any:
    """ALTER TABLE ADD CONSTRAINT without marking the model's constraint as created elsewhere."""
    from tasks.core.alembic_internals import add_constraint_ddl

    return add_constraint_ddl(constraint)


def _apply_error(session: Session, statement: str, error: Exception) -> DatabaseError:
    from tasks.core.engines import describe_database_error

    detail = describe_database_error(error)
    if statement.startswith(_CREATING_TABLES):  # one batch of many statements: name the one
        statement = _failed_statement(error) or statement
    if connection_is_mysql(session):
        outcome = "statements before it were committed (MySQL/MariaDB DDL is not transactional)"
    else:
        outcome = "nothing was changed (rolled back)"
    hint = ""
    if "out of shared memory" in detail or "max_locks_per_transaction" in detail:
        hint = "; raise max_locks_per_transaction or create the tables in smaller steps"
    return DatabaseError(f"failed at {statement}: {detail}; {outcome}{hint}")


_CREATING_TABLES = "creating "


def _failed_statement(error: BaseException) -> str | None:
    """The statement the database refused, as its first line (`CREATE TABLE orders (`), so a
    failure among 64 new tables names the one that failed. Masked like every error text."""
    from tasks.core.redaction import redact

    statement = getattr(error, "statement", None)
    if not isinstance(statement, str) or not statement.strip():
        return None
    first = " ".join(statement.strip().splitlines()[0].split())
    return redact(first if len(first) <= 160 else first[:157] + "...")


def connection_is_mysql(session: Session) -> bool:
    return session.environment.dialect in _NON_TRANSACTIONAL


def _warn_if_not_transactional(session: Session, connection: Connection) -> None:
    if connection.dialect.name in _NON_TRANSACTIONAL:
        session.console.warning(
            f"{connection.dialect.name} commits every DDL statement on its own: a failure part "
            "way leaves the earlier statements applied (use --backup)"
        )


def _drop_everything(connection: Connection, metadata: MetaData) -> list[str]:
    """Drop every table, view, sequence and enum type in the schemas the models use."""
    from sqlalchemy import inspect

    inspector = inspect(connection)
    dialect = connection.dialect.name
    preparer = connection.dialect.identifier_preparer
    default = inspector.default_schema_name
    schemas = {None} | {t.schema for t in metadata.tables.values() if t.schema != default}
    dropped: list[str] = []
    if dialect in _NON_TRANSACTIONAL:
        connection.exec_driver_sql("SET FOREIGN_KEY_CHECKS=0")
    for schema in sorted(schemas, key=lambda s: s or ""):

        def name(object_name: str, schema: str | None = schema) -> str:
            quoted = preparer.quote(object_name)
            return f"{preparer.quote_schema(schema)}.{quoted}" if schema else quoted

        cascade = " CASCADE" if dialect == "postgresql" else ""
        for view in inspector.get_view_names(schema=schema):
            connection.exec_driver_sql(f"DROP VIEW IF EXISTS {name(view)}{cascade}")
        tables = inspector.get_table_names(schema=schema)
        for table in tables:
            connection.exec_driver_sql(f"DROP TABLE IF EXISTS {name(table)}{cascade}")
        dropped.extend(f"{schema}.{t}" if schema else t for t in tables)
        if dialect == "postgresql":
            for sequence in inspector.get_sequence_names(schema=schema):
                connection.exec_driver_sql(f"DROP SEQUENCE IF EXISTS {name(sequence)} CASCADE")
            for enum in inspector.get_enums(schema=schema or default):  # type: ignore[attr-defined]
                connection.exec_driver_sql(f"DROP TYPE IF EXISTS {name(enum['name'])} CASCADE")
    if dialect in _NON_TRANSACTIONAL:
        connection.exec_driver_sql("SET FOREIGN_KEY_CHECKS=1")
    return dropped


# --- connections, backups, reports --------------------------------------------------------------


def _connection(session: Session, *, read_only: bool) -> Any:
    """The environment's connection; a check of a SQLite file that does not exist yet compares
    against an empty in-memory database instead of creating the file."""
    if read_only and _sqlite_file_missing(session):
        return _empty_sqlite()
    return session.connect()


def _sqlite_file_missing(session: Session) -> bool:
    url = session.environment.url
    if url.get_backend_name() != "sqlite":
        return False
    database = url.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return False
    return not Path(database).exists()


def _empty_sqlite() -> Any:
    from contextlib import contextmanager

    from tasks.core.engines import create_engine

    @contextmanager
    def connect() -> Iterator[Connection]:
        from sqlalchemy.engine import make_url

        engine = create_engine(make_url("sqlite://"))
        try:
            with engine.connect() as connection:
                yield connection
        finally:
            engine.dispose()

    return connect()


def _backup_first(session: Session, *, as_json: bool, missing: bool) -> Path | None:
    """Back up before changing anything; a failed backup stops the task (nothing applied).

    With --json, stdout carries only the report: the backup's own lines go to stderr.
    """
    import sys

    from tasks.backup.backups import create_backup
    from tasks.core.console import Console

    console = session.console
    if as_json:
        session.console = Console(stdout=sys.stderr, stderr=console.stderr)
    try:
        if missing:
            name = session.environment.name
            session.console.line(f"{name}: no database file yet, nothing to back up")
            return None
        return create_backup(session)
    finally:
        session.console = console


def _counts(plan: SyncPlan) -> dict[str, int]:
    return {"sync_can_apply": len(plan.to_apply), "needs_revision": len(plan.left_alone)}


def _raise_for(session: Session, plan: SyncPlan, *, applied: bool) -> None:
    """Turn the plan's state into the task's exit code (the report is already printed)."""
    name = session.environment.name
    session.record.details["status"] = plan.status
    if plan.exit_code == ExitCode.OK:
        return
    left = len(plan.left_alone)
    if plan.exit_code == ExitCode.DIFFERENCES:
        raise DifferencesFound(
            f"{name}: {plural(len(plan.items), 'difference')} sync can apply "
            "(run `invoke local.sync`)",
            exit_code=ExitCode.DIFFERENCES,
        )
    can = f"; {len(plan.to_apply)} sync can apply" if plan.to_apply and not applied else ""
    raise DifferencesFound(
        f"{name}: {plural(left, 'difference')} {'needs' if left == 1 else 'need'} a revision "
        f"or a manual step{can}",
        exit_code=ExitCode.NEEDS_REVISION,
    )


def _report(
    session: Session,
    plan: SyncPlan,
    *,
    applied: list[Item],
    backup_path: Path | None,
    as_json: bool,
    history: dict[str, Any] | None = None,
) -> None:
    if as_json:
        report = _json_report(session, plan, applied, backup_path)
        report["revision_history"] = history
        session.console.line(json.dumps(report, indent=2))
        return
    name = session.environment.name
    applied_by_table = dict(_by_table(applied))
    left_by_table = dict(_by_table(plan.items))
    for table in sorted(set(applied_by_table) | set(left_by_table)):
        session.console.line(table)
        for item in applied_by_table.get(table, []):
            session.console.line(f"  + applied: {item.detail}")
        for item in left_by_table.get(table, []):
            _report_item(session, item)
    if plan.exit_code == ExitCode.OK:
        done = f"applied {plural(len(applied), 'change')}; " if applied else ""
        session.console.line(f"{name}: {done}in sync with the models")
        if history and history.get("message"):
            session.console.line(f"{name}: {history['message']}")
    elif plan.items:
        session.console.line(
            "legend: + sync adds it (`invoke local.sync`); ! sync leaves it alone: "
            "write a revision (`invoke local.revision -m MESSAGE --autogenerate`, which "
            "compares the models with the history) or fix it by hand"
        )


def _report_item(session: Session, item: Item) -> None:
    if item.can_apply:
        suffix = " (with its column)" if item.inline_with is not None else ""
        session.console.line(f"  + {item.detail}{suffix}")
        return
    session.console.line(f"  ! {item.detail}")
    if item.reason:
        session.console.line(f"      why: {item.reason}")
    session.console.line(f"      revision: {item.operation}")


def _by_table(items: Iterable[Item]) -> list[tuple[str, list[Item]]]:
    grouped: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        grouped[f"{item.schema}.{item.table}" if item.schema else item.table].append(item)
    return sorted(grouped.items())


def _json_report(
    session: Session, plan: SyncPlan, applied: list[Item], backup_path: Path | None
) -> dict[str, Any]:
    return {
        "environment": session.environment.name,
        "database": session.environment.masked_url,
        "dialect": plan.dialect,
        "status": plan.status,
        "exit_code": int(plan.exit_code),
        "summary": {
            "sync_can_apply": len(plan.to_apply),
            "needs_revision": len(plan.left_alone),
            "applied": len(applied),
        },
        "backup": str(backup_path) if backup_path else None,
        "applied": [item.as_json() for item in applied],
        "tables": [
            {"table": table, "differences": [item.as_json() for item in items]}
            for table, items in _by_table(plan.items)
        ],
    }


def _stamp_command(session: Session) -> str:
    from tasks.core import suggestions

    found = suggestions.command(_collection(session), "stamp", "--rev head")
    return found or "invoke local.stamp --rev head"


def _collection(session: Session) -> str:
    from tasks.core.settings import COLLECTIONS

    for collection, environment in COLLECTIONS.items():
        if environment == session.environment.name:
            return collection
    return session.environment.name
