"""Models against a live database, compared by Alembic's rules but read in bulk.

Alembic's `compare_metadata` turns every reflected table into a `Table` object before comparing;
on hundreds of tables that takes seconds, and a check that takes seconds gets skipped. Here the
database is read with SQLAlchemy's multi-table reflection (`Inspector.get_multi_*`: a few catalog
queries for the whole schema on PostgreSQL) and compared as plain reflected records.

The rules are Alembic's, so `local.sync --check` and `alembic check` agree (the tests hold the two
side by side): names and column signatures for indexes and unique constraints, signatures for
foreign keys, and the dialect's own `compare_type` / `compare_server_default` whenever the quick
textual comparison is not conclusive. Tables with constructs the quick path does not model
(expression indexes, identity and computed columns) are handed to Alembic whole.

The result is a flat list of `Change`s named like Alembic's diffs (`add_column`, `modify_type`,
...). `tasks.schema.sync` decides what it can apply; this module never writes. It is imported only
when a comparison runs (never by `invoke --list`), so it imports SQLAlchemy at the top.

Why this module is long: it re-implements Alembic's `compare_metadata` rule by rule (tables,
columns, types, defaults, comments, indexes, unique constraints, foreign keys, and the handover
to Alembic for what it does not model), and the rules share one `_Context` of per-run caches
(rendered types and defaults, Alembic's verdicts) that the hot loop over every column reads.
Kept in one module so it reads side by side with Alembic's `autogenerate/compare.py`, which
`tests/schema/test_sync_vs_alembic.py` holds it to; the sections below follow Alembic's order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    Enum,
    Float,
    ForeignKeyConstraint,
    Index,
    MetaData,
    Numeric,
    Table,
    UniqueConstraint,
    inspect,
    text,
)
from sqlalchemy.exc import CompileError, DBAPIError
from sqlalchemy.schema import DefaultClause
from sqlalchemy.sql.elements import False_, Null, TextClause, True_
from sqlalchemy.sql.functions import FunctionElement

from tasks.core.alembic_internals import (
    autoincrement_column,
    guard_user_default_comparison,
    has_bind_parameters,
    impl_compare_type,
    impl_reflect_column,
    type_affinity,
)
from tasks.core.comparison import TOOL_TABLES

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Dialect
    from sqlalchemy.engine.reflection import Inspector

    from tasks.core.comparison import Comparison

TableKey = tuple[str | None, str]
# One reflected object as SQLAlchemy's Inspector returns it (its TypedDicts, read as mappings:
# some keys are dialect-specific).
Record = Mapping[str, Any]


@dataclass(frozen=True)
class Change:
    """One difference, named like Alembic's diff of the same thing.

    `op` is Alembic's diff name: add_table, remove_table, add_column, remove_column,
    modify_type, modify_nullable, modify_default, modify_comment, add_index, remove_index,
    add_constraint, remove_constraint (unique constraints), add_fk, remove_fk,
    add_table_comment, remove_table_comment.
    """

    op: str
    table: str
    name: str | None = None
    schema: str | None = None
    # add_*: the model's object; remove_*: the reflected record; modify_*: the model's column.
    model: Any = field(default=None, compare=False, repr=False)
    database: Any = field(default=None, compare=False, repr=False)
    # Columns (and uniqueness, target) that identify an index, constraint or foreign key.
    signature: tuple[Any, ...] = ()
    before: str | None = None
    after: str | None = None

    @property
    def key(self) -> tuple[str, ...]:
        """What the change is about, in a form both this module and Alembic's diffs produce."""
        if self.op in {"add_fk", "remove_fk"}:
            return (self.op, self.table, fk_text(self.signature))
        if self.op in {"add_constraint", "remove_constraint"} and not self.name:
            return (self.op, self.table, "(" + ", ".join(self.signature) + ")")
        return (self.op, self.table, self.name or "")


def fk_text(signature: tuple[Any, ...]) -> str:
    """`(a, b) -> parent(x, y)` from a foreign key signature."""
    _schema, _table, columns, target_schema, target, target_columns = signature[:6]
    target_name = f"{target_schema}.{target}" if target_schema else target
    return f"({', '.join(columns)}) -> {target_name}({', '.join(target_columns)})"


# --- entry points -----------------------------------------------------------------------------


def compare(
    connection: Connection,
    metadata: MetaData,
    exclude: Iterable[str] = TOOL_TABLES,
    comparison: Comparison | None = None,
) -> list[Change]:
    """Every difference between `metadata` and the database, without changing anything.

    Under `comparison` (the project's hooks, ignore rules and the known dialect false
    positives, `tasks.core.comparison`). Hooks the quick path does not model (include_object,
    include_name, comparator functions, include_schemas) hand the whole comparison to Alembic:
    slower, but exactly what autogenerate and `check` see.
    """
    from tasks.core.comparison import Comparison, filter_changes

    comparison = comparison or Comparison()
    context = _Context(connection, inspect(connection), comparison)
    if comparison.needs_alembic:
        changes = _alembic_changes(context, metadata, None, None)
    else:
        excluded = frozenset(exclude)
        changes = []
        for schema, model_tables in _model_tables(metadata, context, excluded).items():
            changes.extend(_compare_schema(context, metadata, schema, model_tables, excluded))
    return filter_changes(comparison, context.backend, changes)


def keys_from_alembic(diffs: Iterable[Any]) -> set[tuple[str, ...]]:
    """The `Change.key`s of Alembic's `compare_metadata` result, to hold the two side by side."""
    return {change.key for change in _from_alembic(_flatten(diffs))}


# --- per schema -------------------------------------------------------------------------------


class _Context:
    """The connection plus caches that make comparing thousands of columns cheap."""

    def __init__(
        self, connection: Connection, inspector: Inspector, comparison: Comparison | None = None
    ) -> None:
        from tasks.core.comparison import Comparison

        self.comparison = comparison or Comparison()
        self.connection = connection
        self.inspector = inspector
        self.dialect: Dialect = connection.dialect
        self.backend = self.dialect.name
        self.is_mysql = self.backend in {"mysql", "mariadb"}
        self.supports_comments = bool(self.dialect.supports_comments)
        self.quick_defaults = self.backend in {"postgresql", "sqlite"}
        self._max_name = min(
            self.dialect.max_identifier_length,
            self.dialect.max_index_name_length or self.dialect.max_identifier_length,
        )
        self._impl: Any = None
        self._rendered_types: dict[Any, str] = {}
        self._type_verdicts: dict[tuple[str, str], bool] = {}
        self._default_verdicts: dict[tuple[Any, ...], bool] = {}
        self._rendered_defaults: dict[Any, str | None] = {}

    @property
    def impl(self) -> Any:
        """Alembic's implementation for this dialect, imported only when a comparison needs it."""
        if self._impl is None:
            from alembic.migration import MigrationContext

            self._impl = MigrationContext.configure(self.connection).impl
        return self._impl

    def constraint_name(self, constraint: Index | UniqueConstraint) -> str | None:
        """The name as the database will store it (naming conventions, truncation)."""
        name = constraint.name
        if name is None:
            return None
        if isinstance(name, str) and len(name) <= self._max_name:
            return name  # what format_constraint returns for a name that needs no truncation
        return self.dialect.identifier_preparer.format_constraint(constraint, _alembic_quote=False)

    def render_type(self, type_: Any) -> str:
        """The dialect's DDL for a type, cached by class and state (types repeat a lot)."""
        try:
            key = (type(type_), tuple(type_.__dict__.items()))
            cached = self._rendered_types.get(key)
        except TypeError:  # unhashable state (Enum's value lists): render every time
            return self.dialect.type_compiler.process(type_)
        if cached is None:
            cached = self._rendered_types[key] = self.dialect.type_compiler.process(type_)
        return cached


def _model_tables(
    metadata: MetaData, context: _Context, excluded: frozenset[str]
) -> dict[str | None, dict[str, Table]]:
    """The models' tables by schema; the database's default schema is spelled None."""
    default = context.inspector.default_schema_name
    by_schema: dict[str | None, dict[str, Table]] = {None: {}}
    for table in metadata.tables.values():
        if table.name in excluded:
            continue
        schema = None if table.schema == default else table.schema
        by_schema.setdefault(schema, {})[table.name] = table
    return by_schema


@dataclass
class _Reflected:
    columns: Mapping[TableKey, Sequence[Record]]
    indexes: Mapping[TableKey, Sequence[Record]]
    uniques: Mapping[TableKey, Sequence[Record]] | None
    foreign_keys: Mapping[TableKey, Sequence[Record]]
    comments: Mapping[TableKey, Record] | None
    primary_keys: Mapping[TableKey, Record] | None


def _reflect(
    context: _Context, schema: str | None, common: list[str], extra: list[str], total: int
) -> _Reflected:
    """One bulk call per kind of object, for all compared tables of the schema at once."""
    inspector = context.inspector
    both = common + extra
    # Asking for most of a schema by name costs more than asking for all of it (the same
    # heuristic as SQLAlchemy's and Alembic's); the extra rows are ignored.
    everything = None if len(both) > 100 and len(both) > total / 2 else both
    names = everything if everything is None else common
    comments = None
    if context.dialect.supports_comments and common:
        comments = inspector.get_multi_table_comment(schema=schema, filter_names=names)
    primary_keys = None
    if context.is_mysql and common:  # its default comparison reads primary keys
        primary_keys = inspector.get_multi_pk_constraint(schema=schema, filter_names=names)
    try:
        uniques = (
            inspector.get_multi_unique_constraints(schema=schema, filter_names=names)
            if common
            else {}
        )
    except NotImplementedError:
        uniques = None
    # MySQL names the index it adds for a foreign key after it: dropped tables need their FKs.
    fk_names = everything if everything is None or context.is_mysql else common
    return _Reflected(
        columns=inspector.get_multi_columns(schema=schema, filter_names=names) if common else {},
        indexes=inspector.get_multi_indexes(schema=schema, filter_names=everything) if both else {},
        uniques=uniques,
        foreign_keys=(
            inspector.get_multi_foreign_keys(schema=schema, filter_names=fk_names)
            if fk_names is None or fk_names
            else {}
        ),
        comments=comments,
        primary_keys=primary_keys,
    )


def _compare_schema(
    context: _Context,
    metadata: MetaData,
    schema: str | None,
    model_tables: dict[str, Table],
    excluded: frozenset[str],
) -> list[Change]:
    all_names = context.inspector.get_table_names(schema=schema)
    database_names = set(all_names) - excluded
    common = sorted(database_names.intersection(model_tables))
    extra = sorted(database_names.difference(model_tables))
    reflected = _reflect(context, schema, common, extra, len(all_names))
    changes: list[Change] = []
    for name in sorted(set(model_tables).difference(database_names)):
        changes.extend(_added_table(context, schema, model_tables[name]))
    for name in extra:
        changes.extend(_removed_table(context, schema, name, reflected))
    delegated = []
    for name in common:
        table_changes = _compare_table(context, schema, model_tables[name], reflected)
        if table_changes is None:
            delegated.append(name)
        else:
            changes.extend(table_changes)
    if delegated:
        changes.extend(_alembic_changes(context, metadata, schema, delegated))
    return changes


def _added_table(context: _Context, schema: str | None, table: Table) -> list[Change]:
    """A missing table; Alembic also lists its indexes as added (they are separate DDL)."""
    changes = [Change("add_table", table.name, schema=schema, model=table)]
    for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
        plain = all(isinstance(expression, Column) for expression in index.expressions)
        if context.backend == "sqlite" and not plain:
            continue  # Alembic cannot reflect these on SQLite and leaves them out
        changes.append(_index_change("add_index", context, schema, table.name, index))
    return changes


def _removed_table(
    context: _Context, schema: str | None, name: str, reflected: _Reflected
) -> list[Change]:
    """A table the models no longer have, with its indexes (Alembic lists those too)."""
    changes = [Change("remove_table", name, schema=schema)]
    key = (schema, name)
    foreign_keys = reflected.foreign_keys.get(key, [])
    indexes = _database_indexes(context, reflected.indexes.get(key, []), foreign_keys)
    for record in indexes:
        changes.append(
            Change(
                "remove_index",
                name,
                record["name"],
                schema,
                database=record,
                signature=_reflected_index_sig(record),
            )
        )
    return changes


def _plain_indexes(table: Table, key: TableKey, reflected: _Reflected) -> bool:
    """Indexes on plain columns only; expression or sorted ones are Alembic's to compare."""
    for index in table.indexes:
        if any(not isinstance(expression, Column) for expression in index.expressions):
            return False
    for record in reflected.indexes.get(key, ()):
        if None in record["column_names"] or record.get("column_sorting"):
            return False
    return True


# --- one table ----------------------------------------------------------------------------------


def _compare_table(
    context: _Context, schema: str | None, table: Table, reflected: _Reflected
) -> list[Change] | None:
    """The table's differences, or None when Alembic must compare it (constructs the quick
    path does not model: identity and computed columns, expression indexes)."""
    key = (schema, table.name)
    if not _plain_indexes(table, key, reflected):
        return None
    changes = _compare_columns(context, schema, table, reflected.columns.get(key, []), reflected)
    if changes is None:
        return None
    changes.extend(_compare_indexes_and_uniques(context, schema, table, reflected))
    changes.extend(
        _compare_foreign_keys(context, schema, table, reflected.foreign_keys.get(key, []))
    )
    if reflected.comments is not None:
        changes.extend(_compare_table_comment(schema, table, reflected.comments.get(key)))
    return changes


def _compare_columns(
    context: _Context,
    schema: str | None,
    table: Table,
    records: Sequence[Record],
    reflected: _Reflected,
) -> list[Change] | None:
    """Added, removed and modified columns; None for identity or computed columns.

    This loop runs for every column of every table: it is kept lean on purpose.
    """
    database: dict[str, Record] = {}
    for reflected_column in records:
        if "computed" in reflected_column or "identity" in reflected_column:
            return None
        database[reflected_column["name"]] = reflected_column
    primary_key = _primary_key_columns(reflected, (schema, table.name))
    changes: list[Change] = []
    for column in table.columns:
        if column.computed is not None or column.identity is not None:
            return None
        if column.system:
            continue
        record = database.pop(column.name, None)
        if record is None:
            changes.append(Change("add_column", table.name, column.name, schema, model=column))
            continue
        for op, before, after in _compare_column(context, table, column, record, primary_key):
            changes.append(
                Change(
                    op,
                    table.name,
                    column.name,
                    schema,
                    model=column,
                    database=record,
                    before=before,
                    after=after,
                )
            )
    for name, record in database.items():  # what is left has no model column
        changes.append(Change("remove_column", table.name, name, schema, database=record))
    return changes


def _primary_key_columns(reflected: _Reflected, key: TableKey) -> frozenset[str]:
    if reflected.primary_keys is None:
        return frozenset()
    return frozenset(reflected.primary_keys.get(key, {}).get("constrained_columns") or ())


def _compare_column(
    context: _Context,
    table: Table,
    column: Column[Any],
    record: Record,
    primary_key: frozenset[str],
) -> list[tuple[str, str | None, str | None]]:
    """(op, database value, model value) for type, nullability, server default and comment,
    in Alembic's order. Most columns match: the common path is kept short."""
    found: list[tuple[str, str | None, str | None]] = []
    try:
        before = context.render_type(record["type"])
        after = context.render_type(column.type)
    except CompileError:  # NullType: a type nobody can name; Alembic does not compare it either
        pass
    else:
        if before != after or context.is_mysql:
            type_change = _type_change(context, column, record, before, after)
            if type_change is not None:
                found.append(("modify_type", *type_change))
    nullable = record["nullable"]
    if bool(nullable) is not bool(column.nullable):
        found.append(
            (
                "modify_nullable",
                "NULL" if nullable else "NOT NULL",
                "NULL" if column.nullable else "NOT NULL",
            )
        )
    if column.server_default is not None or record.get("default") is not None:
        default_change = _default_change(context, table, column, record, primary_key)
        if default_change is not None:
            found.append(("modify_default", *default_change))
    if context.supports_comments:
        comment_before, comment_after = record.get("comment") or None, column.comment or None
        if comment_before != comment_after:
            found.append(("modify_comment", comment_before, comment_after))
    return found


def _type_change(
    context: _Context, column: Column[Any], record: Record, before: str, after: str
) -> tuple[str, str] | None:
    """(database type, model type) when Alembic's `compare_type` says they differ.

    Called when the two DDL strings differ (or on MySQL, whose comparison reads enum values).
    """
    database_type, model_type = record["type"], column.type
    if context.is_mysql and isinstance(database_type, Enum) and isinstance(model_type, Enum):
        differs = impl_compare_type(context.impl, database_type, column)
    elif before == after:
        return None
    else:  # the default comparison depends on the two DDL strings only
        verdict = context._type_verdicts.get((before, after))
        if verdict is None:
            verdict = impl_compare_type(context.impl, database_type, column)
            context._type_verdicts[(before, after)] = verdict
        differs = verdict
    return (before, after) if differs else None


_NEXTVAL = re.compile(r"nextval\('(.+?)'::regclass\)")


def _default_change(
    context: _Context,
    table: Table,
    column: Column[Any],
    record: Record,
    primary_key: frozenset[str],
) -> tuple[str | None, str | None] | None:
    """(database default, model default) when Alembic would report a server-default change."""
    model_default = column.server_default
    database_default = record.get("default")
    if model_default is None and database_default is None:
        return None
    if model_default is not None and not isinstance(model_default, DefaultClause):
        return None  # FetchedValue and friends: Alembic does not compare them
    if model_default is None and _serial_key(context, table, column):
        return None  # Alembic never compares a SERIAL key's default
    rendered = _render_model_default(context, model_default)
    if _surely_equal(context, column, rendered, database_default):
        return None
    differs = _dialect_default_differs(context, table, column, record, rendered, primary_key)
    return (database_default, rendered) if differs else None


def _serial_key(context: _Context, table: Table, column: Column[Any]) -> bool:
    return (
        context.backend == "postgresql"
        and column.primary_key
        and column is autoincrement_column(table)
    )


_SQLITE_PARENS = re.compile(r"^\((.+)\)$")
_SQLITE_QUOTES = re.compile(r"^\"?'(.+)'\"?$")
_PG_CAST_LITERAL = re.compile(r"^'((?:[^']|'')*)'::[\w .\"\[\]()]+$")


def _surely_equal(
    context: _Context, column: Column[Any], rendered: str | None, database: str | None
) -> bool:
    """Defaults that Alembic's dialect comparison would call equal, decided without it.

    Only ever says "equal": anything else goes to Alembic, so the two cannot disagree. Saves
    importing Alembic (and, on PostgreSQL, a query per default) in the everyday cases: string
    literals, which databases store quoted or cast, and SQLite's parenthesised expressions.
    """
    if not context.quick_defaults or rendered is None or database is None:
        return False
    if _NEXTVAL.match(database):
        return False
    if rendered == database:
        return True
    if context.backend == "sqlite":  # Alembic's SQLite normalisation, applied to both sides
        return _sqlite_normal(rendered) == _sqlite_normal(database)
    literal = _PG_CAST_LITERAL.match(database)
    argument = column.server_default.arg  # type: ignore[union-attr]
    return (
        literal is not None
        and isinstance(argument, str)
        and "'" not in argument
        and not isinstance(column.type, Numeric | Float)
        and literal.group(1) == argument
    )


def _sqlite_normal(default: str) -> str:
    return _SQLITE_QUOTES.sub(r"\1", _SQLITE_PARENS.sub(r"\1", default))


def _render_model_default(context: _Context, default: Any) -> str | None:
    """Alembic's rendering of a model's server default, cached for the common constant ones."""
    if default is None:
        return None
    argument = default.arg
    if isinstance(argument, str):
        return argument
    key = _default_cache_key(argument)
    if key is not None and key in context._rendered_defaults:
        return context._rendered_defaults[key]
    rendered = str(
        argument.compile(dialect=context.dialect, compile_kwargs={"literal_binds": True})
    )
    if key is not None:
        context._rendered_defaults[key] = rendered
    return rendered


def _default_cache_key(argument: Any) -> tuple[Any, ...] | None:
    """A key for defaults that always render the same: text(), true(), now()."""
    if isinstance(argument, TextClause) and not has_bind_parameters(argument):
        return ("text", argument.text)
    if isinstance(argument, True_ | False_ | Null):
        return (type(argument),)
    if isinstance(argument, FunctionElement) and not len(argument.clauses):
        return (
            type(argument),
            getattr(argument, "name", None),
            *getattr(argument, "packagenames", ()),
        )
    return None


def _dialect_default_differs(
    context: _Context,
    table: Table,
    column: Column[Any],
    record: Record,
    rendered: str | None,
    primary_key: frozenset[str],
) -> bool:
    """Alembic's dialect comparison (normalisation, or a query on PostgreSQL), cached."""
    if _serial_key(context, table, column):
        return False  # Alembic never compares a SERIAL key's default
    info = dict(record)
    impl_reflect_column(context.impl, context.inspector, table.name, info)
    database_default = info.get("default")
    if database_default is None and column.server_default is None:
        return False
    key = (
        database_default,
        rendered,
        column.primary_key and column is autoincrement_column(table),
        type(info["type"]),
        (
            isinstance(column.server_default.arg, str)
            if isinstance(column.server_default, DefaultClause)
            else None
        ),
        column.name in primary_key,
        info.get("autoincrement"),
        type(column.type),
        type_affinity(column.type),
    )
    verdict = context._default_verdicts.get(key)
    if verdict is None:
        stand_in = Column(
            column.name,
            info["type"],
            primary_key=column.name in primary_key,
            autoincrement=info.get("autoincrement", "auto"),
            server_default=(
                DefaultClause(text(database_default)) if database_default is not None else None
            ),
        )
        verdict = _run_default_comparison(context, stand_in, column, rendered, database_default)
        context._default_verdicts[key] = verdict
    return verdict


def _run_default_comparison(
    context: _Context, stand_in: Column[Any], column: Column[Any], rendered: Any, database: Any
) -> bool:
    """PostgreSQL's comparison runs a query: inside a savepoint, so a failure aborts nothing."""
    if context.backend != "postgresql":
        return bool(context.impl.compare_server_default(stand_in, column, rendered, database))
    try:
        with context.connection.begin_nested():
            return bool(context.impl.compare_server_default(stand_in, column, rendered, database))
    except DBAPIError:
        return True  # not comparable on the server: report it rather than guess


def _compare_table_comment(schema: str | None, table: Table, record: Record | None) -> list[Change]:
    before = (record or {}).get("text") or None
    after = table.comment or None
    if before == after:
        return []
    op = "remove_table_comment" if after is None else "add_table_comment"
    return [Change(op, table.name, schema=schema, model=table, before=before, after=after)]


# --- indexes and unique constraints -------------------------------------------------------------


@dataclass(eq=False)
class _Sig:
    """An index or unique constraint from either side, with what Alembic compares."""

    is_index: bool
    name: str | None
    columns: tuple[str, ...]
    unique: bool
    options: tuple[str, ...]
    obj: Any  # the model's object, or the reflected record
    duplicates: str | None = None  # MySQL: the unique index this constraint is; PG: the reverse

    @property
    def unnamed(self) -> tuple[Any, ...]:
        if self.is_index:
            return (self.unique, *self.columns)
        return tuple(sorted(self.columns))


def _model_sigs(context: _Context, table: Table) -> tuple[list[_Sig], list[_Sig]]:
    uniques = [
        _Sig(
            False,
            context.constraint_name(c),
            tuple(col.name for col in c.columns),
            True,
            _pg_options(context, c.dialect_kwargs),
            c,
        )
        for c in table.constraints
        if isinstance(c, UniqueConstraint)
    ]
    indexes = [
        _Sig(
            True,
            context.constraint_name(ix),
            tuple(col.name for col in ix.columns),
            bool(ix.unique),
            _pg_options(context, ix.dialect_kwargs),
            ix,
        )
        for ix in table.indexes
    ]
    return uniques, indexes


def _pg_options(context: _Context, options: Mapping[str, Any]) -> tuple[str, ...]:
    """The one index option Alembic compares (PostgreSQL's NULLS NOT DISTINCT)."""
    if context.backend == "postgresql" and options.get("postgresql_nulls_not_distinct"):
        return ("nulls_not_distinct",)
    return ()


def _database_indexes(
    context: _Context, records: Sequence[Record], fk_names: Sequence[Record]
) -> Sequence[Record]:
    """Reflected indexes minus the ones the database adds by itself.

    PostgreSQL lists the index behind each unique constraint; MySQL adds an index for every
    foreign key (named after the column or the constraint). Alembic ignores both.
    """
    kept = []
    for record in records:
        if context.backend == "postgresql" and record.get("duplicates_constraint"):
            continue
        if context.backend in {"mysql", "mariadb"} and _mysql_implicit_index(record, fk_names):
            continue
        kept.append(record)
    return kept


def _mysql_implicit_index(record: Record, foreign_keys: Sequence[Record]) -> bool:
    if record["unique"]:
        return False
    for column in record["column_names"]:
        if record["name"] == column:
            return True
        for fk in foreign_keys:
            if column in fk["constrained_columns"] and fk["name"] == record["name"]:
                return True
    return False


def _reflected_index_sig(record: Record) -> tuple[Any, ...]:
    return (bool(record["unique"]), *record["column_names"])


def _compare_indexes_and_uniques(
    context: _Context, schema: str | None, table: Table, reflected: _Reflected
) -> list[Change]:
    """Alembic's `_compare_indexes_and_uniques`, on reflected records."""
    key = (schema, table.name)
    foreign_keys = reflected.foreign_keys.get(key, [])
    index_records = _database_indexes(context, reflected.indexes.get(key, []), foreign_keys)
    unique_records = (reflected.uniques or {}).get(key, [])
    if reflected.uniques is not None and _same_names_and_columns(
        context, table, index_records, unique_records
    ):
        return []
    model_uniques, model_indexes = _model_sigs(context, table)
    supports_uniques = reflected.uniques is not None
    removed_implicit = {
        record["name"] for record in reflected.indexes.get(key, []) if record not in index_records
    }
    if context.backend in {"mysql", "mariadb"}:  # Alembic drops their model twins too (#202)
        model_indexes = [sig for sig in model_indexes if sig.name not in removed_implicit]
    database_uniques = [
        _Sig(
            False,
            record["name"],
            tuple(record["column_names"]),
            True,
            _pg_options(context, record.get("dialect_options") or {}),
            record,
            record.get("duplicates_index"),
        )
        for record in unique_records
    ]
    database_indexes = [
        _Sig(
            True,
            record["name"],
            tuple(record["column_names"]),
            bool(record["unique"]),
            _pg_options(context, record.get("dialect_options") or {}),
            record,
        )
        for record in index_records
    ]
    if any(sig.duplicates for sig in database_uniques):
        database_uniques, database_indexes = _dedupe_mysql_uniques(
            database_uniques, database_indexes, model_uniques, model_indexes
        )
    return _match_indexes_and_uniques(
        context,
        schema,
        table,
        model_uniques,
        model_indexes,
        database_uniques,
        database_indexes,
        supports_uniques,
    )


def _same_names_and_columns(
    context: _Context,
    table: Table,
    index_records: Sequence[Record],
    unique_records: Sequence[Record],
) -> bool:
    """The everyday case, decided quickly: every index and unique constraint has a name, and
    each name has the same kind, uniqueness, columns and options on both sides. In that case
    Alembic's matching finds nothing either. MySQL, which reports unique constraints twice,
    always takes the full path."""
    if context.is_mysql:
        return False
    model: dict[str | None, tuple[Any, ...]] = {}
    for index in table.indexes:
        columns = tuple(column.name for column in index.columns)
        options = _pg_options(context, index.dialect_kwargs)
        model[context.constraint_name(index)] = (True, bool(index.unique), columns, options)
    for constraint in table.constraints:
        if isinstance(constraint, UniqueConstraint):
            name = context.constraint_name(constraint)
            if name is None or name in model:
                return False
            columns = tuple(sorted(column.name for column in constraint.columns))
            model[name] = (False, True, columns, _pg_options(context, constraint.dialect_kwargs))
    database: dict[str | None, tuple[Any, ...]] = {}
    for record in index_records:
        options = _pg_options(context, record.get("dialect_options") or {})
        columns = tuple(record["column_names"])
        database[record["name"]] = (True, bool(record["unique"]), columns, options)
    for record in unique_records:
        name = record["name"]
        if name is None or name in database:
            return False
        options = _pg_options(context, record.get("dialect_options") or {})
        database[name] = (False, True, tuple(sorted(record["column_names"])), options)
    return model == database


def _dedupe_mysql_uniques(
    database_uniques: list[_Sig],
    database_indexes: list[_Sig],
    model_uniques: list[_Sig],
    model_indexes: list[_Sig],
) -> tuple[list[_Sig], list[_Sig]]:
    """MySQL reports each unique constraint twice; keep the form the models use (Alembic #276)."""
    model_unique_names = {sig.name for sig in model_uniques if sig.name}
    unnamed_model_uniques = {sig.unnamed for sig in model_uniques if not sig.name}
    model_unique_index_names = {sig.name for sig in model_indexes if sig.unique}
    unique_index_names = {sig.name for sig in database_indexes if sig.unique}
    drop_uniques, drop_indexes = set(), set()
    for sig in database_uniques:
        if not sig.duplicates:
            continue
        if sig.name not in model_unique_names:
            if sig.unnamed not in unnamed_model_uniques:
                drop_uniques.add(sig.name)
        elif sig.name not in model_unique_index_names and sig.name in unique_index_names:
            drop_indexes.add(sig.name)
    return (
        [sig for sig in database_uniques if sig.name not in drop_uniques],
        [sig for sig in database_indexes if not (sig.unique and sig.name in drop_indexes)],
    )


def _match_indexes_and_uniques(
    context: _Context,
    schema: str | None,
    table: Table,
    model_uniques: list[_Sig],
    model_indexes: list[_Sig],
    database_uniques: list[_Sig],
    database_indexes: list[_Sig],
    supports_uniques: bool,
) -> list[Change]:
    changes: list[Change] = []
    name = table.name

    def added(sig: _Sig) -> None:
        if sig.is_index:
            changes.append(_index_change("add_index", context, schema, name, sig.obj))
        elif supports_uniques:
            changes.append(
                Change(
                    "add_constraint", name, sig.name, schema, model=sig.obj, signature=sig.columns
                )
            )

    def removed(sig: _Sig) -> None:
        if sig.is_index:
            if sig.unique and not supports_uniques:
                return
            changes.append(
                Change(
                    "remove_index", name, sig.name, schema, database=sig.obj, signature=sig.unnamed
                )
            )
        else:
            changes.append(
                Change(
                    "remove_constraint",
                    name,
                    sig.name,
                    schema,
                    database=sig.obj,
                    signature=sig.columns,
                )
            )

    model_names = {sig.name: sig for sig in [*model_uniques, *model_indexes] if sig.name}
    database_names = {sig.name: sig for sig in [*database_uniques, *database_indexes] if sig.name}
    uniques_by_name = {sig.name: sig for sig in database_uniques}
    indexes_by_name = {sig.name: sig for sig in database_indexes}
    doubled = {
        key: (uniques_by_name[key], indexes_by_name[key])
        for key in set(uniques_by_name).intersection(indexes_by_name)
    }
    database_uniques_by_sig = {sig.unnamed: sig for sig in database_uniques}
    model_uniques_by_sig = {sig.unnamed: sig for sig in model_uniques}
    unnamed_model_uniques = {sig.unnamed: sig for sig in model_uniques if not sig.name}

    for key in sorted(set(database_names).difference(model_names)):
        sig = database_names[key]
        if not sig.is_index and sig.unnamed in unnamed_model_uniques:
            continue
        if key in doubled:
            unique, index = doubled[key]
            if (
                all(index.unnamed != model.unnamed for model in model_indexes)
                and unique.unnamed not in model_uniques_by_sig
            ):
                removed(unique)
                removed(index)
        else:
            removed(sig)

    for key in sorted(set(model_names).intersection(database_names)):
        model = model_names[key]
        if key in doubled:
            database = doubled[key][1] if model.is_index else doubled[key][0]
        else:
            database = database_names[key]
        if model.is_index != database.is_index or _differs(context, model, database):
            removed(database)
            added(model)

    for key in sorted(set(model_names).difference(database_names)):
        added(model_names[key])
    for unnamed, sig in unnamed_model_uniques.items():
        if unnamed not in database_uniques_by_sig:
            added(sig)
    return changes


def _differs(context: _Context, model: _Sig, database: _Sig) -> bool:
    """Alembic's compare_indexes / compare_unique_constraint for plain-column objects."""
    if model.is_index:
        if model.unique != database.unique:
            return True
        if context.backend == "postgresql":  # compared as lower-cased, unquoted expressions
            if [c.lower() for c in model.columns] != [c.lower() for c in database.columns]:
                return True
            return model.options != database.options
        return model.columns != database.columns
    if model.unnamed != database.unnamed:
        return True
    return context.backend == "postgresql" and model.options != database.options


def _index_change(
    op: str, context: _Context, schema: str | None, table: str, index: Index
) -> Change:
    return Change(
        op,
        table,
        context.constraint_name(index),
        schema,
        model=index,
        signature=(bool(index.unique), *(column.name for column in index.columns)),
    )


# --- foreign keys -------------------------------------------------------------------------------


def _model_fk_spec(fk: ForeignKeyConstraint) -> tuple[Any, ...]:
    table = fk.parent
    target = fk.elements[0].column.table
    return (
        table.schema,
        table.name,
        tuple(fk.columns[key].name for key in fk.column_keys),
        target.schema,
        target.name,
        tuple(element.column.name for element in fk.elements),
    )


def _options(onupdate: Any, ondelete: Any, deferrable: Any, initially: Any) -> tuple[Any, ...]:
    def action(value: Any) -> str | None:
        return None if not value or value.lower() == "no action" else value.lower()

    if initially and initially.lower() == "deferred":
        deferral = "initially_deferrable"
    else:
        deferral = "deferrable" if deferrable else "not deferrable"
    return (action(onupdate), action(ondelete), deferral)


def _compare_foreign_keys(
    context: _Context, schema: str | None, table: Table, records: Sequence[Record]
) -> list[Change]:
    """Alembic's `_compare_foreign_keys`: by signature, options included when reflected."""
    models = [c for c in table.constraints if isinstance(c, ForeignKeyConstraint)]
    model_specs = {_model_fk_spec(fk): fk for fk in models}
    with_options = bool(records) and "options" in records[0]
    database: dict[tuple[Any, ...], Record] = {}
    for record in records:
        spec = (
            schema,
            table.name,
            tuple(record["constrained_columns"]),
            record["referred_schema"],
            record["referred_table"],
            tuple(record["referred_columns"]),
        )
        options = dict(record.get("options") or {})
        twin = model_specs.get(spec)
        if twin is not None and context.backend in {"mysql", "mariadb"}:
            for rule in ("ondelete", "onupdate"):  # MySQL does not report RESTRICT, its default
                if (getattr(twin, rule) or "").lower() == "restrict" and not options.get(rule):
                    options[rule] = "RESTRICT"
        full = spec + _options(
            options.get("onupdate"),
            options.get("ondelete"),
            options.get("deferrable"),
            options.get("initially"),
        )
        database[full if with_options else spec] = record
    model: dict[tuple[Any, ...], ForeignKeyConstraint] = {}
    for spec, fk in model_specs.items():
        full = spec + _options(fk.onupdate, fk.ondelete, fk.deferrable, fk.initially)
        model[full if with_options else spec] = fk
    changes = [
        Change("remove_fk", table.name, record["name"], schema, database=record, signature=sig)
        for sig, record in database.items()
        if sig not in model
    ]
    changes.extend(
        Change("add_fk", table.name, _fk_name(context, fk), schema, model=fk, signature=sig)
        for sig, fk in model.items()
        if sig not in database
    )
    return changes


def _fk_name(context: _Context, fk: ForeignKeyConstraint) -> str | None:
    return context.constraint_name(fk)  # type: ignore[arg-type]


# --- Alembic, for what the quick path does not model --------------------------------------------


def _alembic_changes(
    context: _Context, metadata: MetaData, schema: str | None, tables: list[str] | None
) -> list[Change]:
    """Alembic's own comparison under the project's options, limited to `tables` of `schema`
    (all of them when `tables` is None)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    guard_user_default_comparison()
    options = context.comparison.options(context.backend)
    if tables is not None:
        options.update(_limited_to(options, schema, set(tables)))
    migration = MigrationContext.configure(context.connection, opts=options)
    diffs = _flatten(compare_metadata(migration, metadata))
    return _from_alembic(diffs, metadata, context.connection.dialect)


def _limited_to(options: dict[str, Any], schema: str | None, wanted: set[str]) -> dict[str, Any]:
    """include_name / include_object that keep only `wanted` tables, on top of the project's."""
    outer_name, outer_object = options["include_name"], options["include_object"]

    def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
        if type_ == "table" and not (name in wanted and parent_names.get("schema_name") == schema):
            return False
        return bool(outer_name(name, type_, parent_names))

    def include_object(obj: Any, name: str | None, type_: str, *rest: Any) -> bool:
        if type_ == "table" and not (name in wanted and obj.schema in {schema, None}):
            return False
        return bool(outer_object(obj, name, type_, *rest))

    return {"include_name": include_name, "include_object": include_object}


def _flatten(diffs: Iterable[Any]) -> list[tuple[Any, ...]]:
    flat: list[tuple[Any, ...]] = []
    for diff in diffs:
        flat.extend(diff if isinstance(diff, list) else [diff])
    return flat


def _from_alembic(
    diffs: list[tuple[Any, ...]], metadata: MetaData | None = None, dialect: Any = None
) -> list[Change]:
    """Alembic's diff tuples as Changes (same op names, same keys).

    A column modification carries only names in Alembic's diff: its model column is looked up
    in `metadata`, so whatever describes the change has the model's type and default to show.
    """
    changes = []
    for diff in diffs:
        converter = _ALEMBIC_CONVERTERS.get(diff[0])
        if converter is not None:
            change = _from_modify(diff, dialect) if converter is _from_modify else converter(diff)
            if change.model is None and diff[0].startswith("modify_") and metadata is not None:
                change = _with_model_column(change, metadata)
            if diff[0] == "add_table" and metadata is not None:
                change = _with_model_table(change, metadata)
            changes.append(change)
    return changes


def _with_model_table(change: Change, metadata: MetaData) -> Change:
    """Alembic's `add_table` carries a copy of the table in a MetaData of its own (rebuilt from
    the operation), whose foreign keys reach no other table and which has no indexes: creating
    from it loses both the dependency order and the indexes. The model's own table has them."""
    from dataclasses import replace

    for table in metadata.tables.values():
        if table.name == change.table and table.schema == change.schema:
            return replace(change, model=table)
    return change


def _with_model_column(change: Change, metadata: MetaData) -> Change:
    from dataclasses import replace

    for table in metadata.tables.values():
        if table.name == change.table and table.schema in {change.schema, None}:
            column = table.columns.get(change.name or "")
            if column is not None:
                return replace(change, model=column)
    return change


def _from_table(diff: tuple[Any, ...]) -> Change:
    table = diff[1]
    comment = getattr(table, "comment", None)
    return Change(diff[0], table.name, schema=table.schema, model=table, after=comment)


def _from_column(diff: tuple[Any, ...]) -> Change:
    _op, schema, table, column = diff
    return Change(diff[0], table, column.name, schema, model=column)


def _from_modify(diff: tuple[Any, ...], dialect: Any = None) -> Change:
    op, schema, table, column, _existing, before, after = diff
    return Change(
        op,
        table,
        column,
        schema,
        before=_as_text(before, dialect),
        after=_as_text(after, dialect),
    )


def _from_index(diff: tuple[Any, ...]) -> Change:
    index = diff[1]
    signature = (bool(index.unique), *(getattr(c, "name", None) for c in index.expressions))
    model = index if diff[0] == "add_index" else None
    return Change(
        diff[0], index.table.name, index.name, index.table.schema, model=model, signature=signature
    )


def _from_constraint(diff: tuple[Any, ...]) -> Change:
    constraint = diff[1]
    name = constraint.name if isinstance(constraint.name, str) else None
    columns = tuple(column.name for column in constraint.columns)
    model = constraint if diff[0] == "add_constraint" else None
    return Change(
        diff[0],
        constraint.table.name,
        name,
        constraint.table.schema,
        model=model,
        signature=columns,
    )


def _from_fk(diff: tuple[Any, ...]) -> Change:
    fk = diff[1]
    name = fk.name if isinstance(fk.name, str) else None
    model = fk if diff[0] == "add_fk" else None
    return Change(
        diff[0], fk.parent.name, name, fk.parent.schema, model=model, signature=_model_fk_spec(fk)
    )


def _as_text(value: Any, dialect: Any = None) -> str | None:
    """A modified attribute as text: rendered for the database's dialect, since a construct of
    the application's own (`@compiles` for one dialect only, such as a UUID default) has no
    generic rendering; one that renders nowhere is named, never a crash."""
    from sqlalchemy.exc import CompileError
    from sqlalchemy.sql.elements import ClauseElement

    if isinstance(value, bool):
        return "NULL" if value else "NOT NULL"
    if value is None:
        return None
    argument = getattr(value, "arg", None)
    if argument is None:
        return str(value)
    argument = getattr(argument, "text", argument)
    if not isinstance(argument, ClauseElement):
        return str(argument)
    try:
        return str(argument.compile(dialect=dialect)) if dialect is not None else str(argument)
    except CompileError:
        return f"<{type(argument).__name__}, which {getattr(dialect, 'name', 'SQL')} cannot render>"


_ALEMBIC_CONVERTERS: dict[str, Callable[[tuple[Any, ...]], Change]] = {
    "add_table": _from_table,
    "remove_table": _from_table,
    "add_column": _from_column,
    "remove_column": _from_column,
    "modify_type": _from_modify,
    "modify_nullable": _from_modify,
    "modify_default": _from_modify,
    "modify_comment": _from_modify,
    "add_index": _from_index,
    "remove_index": _from_index,
    "add_constraint": _from_constraint,
    "remove_constraint": _from_constraint,
    "add_fk": _from_fk,
    "remove_fk": _from_fk,
    "add_table_comment": _from_table,
    "remove_table_comment": _from_table,
}
