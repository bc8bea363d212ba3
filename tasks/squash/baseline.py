"""A squash baseline: the schema a chain of revisions built, as one revision's statements.

The schema is read back from a throwaway database the old chain built (SQLAlchemy reflection)
and rendered through Alembic's own DDL implementation in offline mode (`MigrationContext` with
`as_sql`, `impl.create_table`), so the statements are the ones Alembic would send for these
tables on that dialect. PostgreSQL enum types and sequences are rendered first, by name, so a
type shared by two tables is created once and every sequence keeps its parameters and owner.

The statements are written into the baseline as data, per dialect, and sent in as few round
trips as the driver allows: one multi-statement string on PostgreSQL (psycopg2 sends it as one
simple query), one statement at a time where drivers take one (SQLite, MySQL). The baseline's
cost on a fresh database is then its statements, not one Alembic operation per object.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tasks.core.comparison import TOOL_TABLES

if TYPE_CHECKING:
    from sqlalchemy import MetaData
    from sqlalchemy.engine import Connection


@dataclass
class DialectSchema:
    """One dialect's statements: upgrade creates the schema, downgrade drops it."""

    dialect: str
    upgrade: list[str] = field(default_factory=list)
    downgrade: list[str] = field(default_factory=list)


class _Statements(io.StringIO):
    """Alembic's offline output, one statement per write (`static_output`)."""

    def __init__(self) -> None:
        super().__init__()
        self.statements: list[str] = []

    def write(self, text: str) -> int:
        statement = text.strip()
        if statement.endswith(";"):
            statement = statement[:-1].rstrip()
        if statement:
            self.statements.append(statement)
        return len(text)


def schema_statements(connection: Connection) -> DialectSchema:
    """Reflect the connection's schema (tool tables aside) and render it for its dialect."""
    from sqlalchemy import MetaData, inspect

    dialect = connection.dialect
    metadata = MetaData()
    metadata.reflect(bind=connection, only=lambda name, _meta: name not in TOOL_TABLES)
    inspector = inspect(connection)
    result = DialectSchema(_dialect_name(dialect.name))
    up_first: list[str] = []
    up_last: list[str] = []
    down_last: list[str] = []
    if dialect.name == "postgresql":
        up_first, up_last, down_last = _postgres_types(connection, inspector, metadata)
    views = _views(inspector, dialect)
    tables, cyclic = _ordered(metadata, dialect)
    result.upgrade = up_first + _render(dialect, tables, cyclic) + up_last + views["create"]
    result.downgrade = views["drop"] + _render(dialect, tables, cyclic, drop=True) + down_last
    connection.rollback()
    return result


def _dialect_name(name: str) -> str:
    return "mysql" if name == "mariadb" else name


def _ordered(metadata: MetaData, dialect: Any) -> tuple[list[Any], list[Any]]:
    """Tables in dependency order, and the foreign keys of cycles (added after, by ALTER)."""
    from sqlalchemy.schema import sort_tables_and_constraints

    tables = []
    cyclic: list[Any] = []
    for table, remaining in sort_tables_and_constraints(list(metadata.tables.values())):
        if table is not None:
            tables.append(table)
        elif dialect.supports_alter:
            cyclic.extend(remaining)
    for constraint in cyclic:
        constraint.table.constraints.discard(constraint)
    return tables, cyclic


def _render(dialect: Any, tables: list[Any], cyclic: list[Any], *, drop: bool = False) -> list[str]:
    """The tables' DDL as Alembic writes it offline for `dialect`."""
    from alembic.runtime.migration import MigrationContext

    output = _Statements()
    context = MigrationContext.configure(
        dialect=dialect, opts={"as_sql": True, "output_buffer": output, "literal_binds": True}
    )
    impl = context.impl
    if drop:
        if cyclic:
            for constraint in cyclic:
                impl.drop_constraint(constraint)
        for table in reversed(tables):
            impl.drop_table(table)
    else:
        for table in tables:
            impl.create_table(table)
        for constraint in cyclic:
            impl.add_constraint(constraint)
    return output.statements


def _postgres_types(
    connection: Connection, inspector: Any, metadata: MetaData
) -> tuple[list[str], list[str], list[str]]:
    """(before the tables, after them, after dropping them): enum types and sequences."""
    from sqlalchemy import text
    from sqlalchemy.dialects.postgresql import ENUM

    preparer = connection.dialect.identifier_preparer
    quote = preparer.quote
    before, after, dropped = [], [], []
    for enum in inspector.get_enums():
        if not enum.get("visible", True):
            continue
        labels = ", ".join("'" + label.replace("'", "''") + "'" for label in enum["labels"])
        before.append(f"CREATE TYPE {quote(enum['name'])} AS ENUM ({labels})")
        dropped.append(f"DROP TYPE {quote(enum['name'])}")
    for table in metadata.tables.values():
        for column in table.columns:
            if isinstance(column.type, ENUM):
                column.type.create_type = False
            default = column.server_default
            if default is not None and "nextval(" in str(getattr(default, "arg", "")):
                column.autoincrement = False  # the sequence is created, and owned, explicitly
    rows = connection.execute(
        text(
            "SELECT s.sequencename, s.data_type::text, s.start_value, s.increment_by, "
            "s.min_value, s.max_value, s.cycle, s.cache_size, "
            "(SELECT d.deptype FROM pg_depend d WHERE d.classid = 'pg_class'::regclass "
            "  AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass "
            "  AND d.deptype IN ('a', 'i') LIMIT 1) AS deptype, "
            "(SELECT t.relname || '.' || a.attname FROM pg_depend d "
            "  JOIN pg_class t ON t.oid = d.refobjid "
            "  JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid "
            "  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid "
            "  AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'a' LIMIT 1) AS owner "
            "FROM pg_sequences s JOIN pg_namespace n ON n.nspname = s.schemaname "
            "JOIN pg_class c ON c.relname = s.sequencename AND c.relnamespace = n.oid "
            "WHERE s.schemaname = current_schema() ORDER BY s.sequencename"
        )
    ).all()
    columns = {
        f"{table.name}.{column.name}": column
        for table in metadata.tables.values()
        for column in table.columns
    }
    for name, data_type, start, increment, low, high, cycle, cache, deptype, owner in rows:
        if deptype == "i":  # an identity column's own sequence comes with its table
            continue
        parameters = (str(start), str(increment), str(low), str(high), bool(cycle), str(cache))
        if owner and _is_serial(name, owner, data_type, parameters) and owner in columns:
            _as_serial(columns[owner], data_type)  # SERIAL makes the same sequence, owned
            continue
        before.append(
            f"CREATE SEQUENCE {quote(name)} AS {data_type} INCREMENT BY {increment} "
            f"MINVALUE {low} MAXVALUE {high} START WITH {start} CACHE {cache} "
            f"{'CYCLE' if cycle else 'NO CYCLE'}"
        )
        if owner:
            table_name, column_name = owner.split(".", 1)
            after.append(
                f"ALTER SEQUENCE {quote(name)} OWNED BY {quote(table_name)}.{quote(column_name)}"
            )
        else:
            dropped.insert(0, f"DROP SEQUENCE {quote(name)}")
    connection.rollback()
    return before, after, dropped


# What `serial`, `bigserial` and `smallserial` create: the sequence PostgreSQL names
# <table>_<column>_seq, with these parameters, owned by the column.
SERIALS = {
    "integer": ("SERIAL", "2147483647"),
    "bigint": ("BIGSERIAL", "9223372036854775807"),
    "smallint": ("SMALLSERIAL", "32767"),
}


def _is_serial(name: str, owner: str, data_type: str, parameters: tuple[Any, ...]) -> bool:
    if data_type not in SERIALS:
        return False
    expected = ("1", "1", "1", SERIALS[data_type][1], False, "1")
    return name == f"{owner.replace('.', '_')}_seq" and parameters == expected


def _as_serial(column: Any, data_type: str) -> None:
    """The column written as PostgreSQL's serial pseudo-type: its default and owned sequence
    come with it, as when the old chain created it."""
    from sqlalchemy.types import UserDefinedType

    spec = SERIALS[data_type][0]

    class Serial(UserDefinedType):
        cache_ok = True

        def get_col_spec(self, **_kw: Any) -> str:
            return spec

    column.type = Serial()
    column.server_default = None
    column.autoincrement = False


def _views(inspector: Any, dialect: Any) -> dict[str, list[str]]:
    """Views, by name (PostgreSQL and SQLite; elsewhere the proof reports them missing)."""
    quote = dialect.identifier_preparer.quote
    create: list[str] = []
    drop: list[str] = []
    for name in sorted(inspector.get_view_names()):
        definition = (inspector.get_view_definition(name) or "").strip().rstrip(";")
        if dialect.name == "postgresql":
            create.append(f"CREATE VIEW {quote(name)} AS {definition}")
        elif dialect.name == "sqlite" and definition.upper().startswith("CREATE"):
            create.append(definition)
        else:
            continue
        drop.insert(0, f"DROP VIEW {quote(name)}")
    return {"create": create, "drop": drop}
