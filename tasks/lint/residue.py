"""What a failed revision leaves behind on MySQL and MariaDB, where DDL cannot be rolled back.

Every DDL statement there commits implicitly, before and after itself. A revision that fails
after its first `CREATE TABLE` leaves that table in place while the version table still names
the previous revision, and every re-run then fails with "table already exists". Alembic cannot
undo this, and neither can we; what we can do is say exactly what is left: the schema is read
before each revision starts and again after it fails, and the difference is reported with the
statements that undo what was added.

The snapshot reads `information_schema` in four queries, whatever the number of tables, so
taking one before every revision costs milliseconds, not a reflection per table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

# Dialects whose DDL commits implicitly (SQLAlchemy backend names).
NON_TRANSACTIONAL_DDL = frozenset({"mysql", "mariadb"})

# (kind, table, name, definition): one row per schema object of the current database.
SchemaObject = tuple[str, str, str, str]

_QUERIES: dict[str, str] = {
    "table": (
        "SELECT table_name, table_name, table_type FROM information_schema.tables "
        "WHERE table_schema = DATABASE()"
    ),
    "column": (
        "SELECT table_name, column_name, CONCAT_WS(' ', column_type, is_nullable, "
        "COALESCE(column_default, ''), extra) FROM information_schema.columns "
        "WHERE table_schema = DATABASE()"
    ),
    "index": (
        "SELECT table_name, index_name, GROUP_CONCAT(column_name ORDER BY seq_in_index) "
        "FROM information_schema.statistics WHERE table_schema = DATABASE() "
        "GROUP BY table_name, index_name"
    ),
    "foreign key": (
        "SELECT table_name, constraint_name, constraint_type "
        "FROM information_schema.table_constraints "
        "WHERE table_schema = DATABASE() AND constraint_type = 'FOREIGN KEY'"
    ),
}


def takes_snapshots(dialect: str) -> bool:
    """Only where DDL escapes the revision's transaction is a before/after comparison useful."""
    return dialect in NON_TRANSACTIONAL_DDL


def ddl_statement_count(sql: str) -> int:
    """How many statements of `sql` (MySQL dialect) are DDL, each a commit of its own.

    Statements that are not understood count as DDL: the count feeds a warning, and a warning
    missed is worse than one too many. Alembic's own version-table bookkeeping is not counted.
    """
    import logging

    import sqlglot
    from sqlglot import exp

    data_kinds = (exp.Insert, exp.Update, exp.Delete, exp.Select, exp.Set, exp.Use)
    bookkeeping = (exp.Transaction, exp.Commit, exp.Rollback, exp.Semicolon)
    logging.getLogger("sqlglot").setLevel(logging.ERROR)  # "falling back to Command" chatter
    try:
        statements = [item for item in sqlglot.parse(sql, read="mysql") if item is not None]
    except sqlglot.errors.SqlglotError:
        chunks = [chunk.strip().upper() for chunk in sql.split(";") if chunk.strip()]
        return sum(
            "ALEMBIC_VERSION" not in chunk and chunk not in {"BEGIN", "COMMIT"} for chunk in chunks
        )
    return sum(
        not isinstance(item, data_kinds + bookkeeping)
        and "alembic_version" not in item.sql().lower()
        for item in statements
    )


def snapshot(connection: Connection) -> frozenset[SchemaObject]:
    """Every table, column, index and foreign key of the connection's database."""
    from sqlalchemy import text

    objects: set[SchemaObject] = set()
    for kind, query in _QUERIES.items():
        for table, name, definition in connection.execute(text(query)):
            objects.add((kind, str(table), str(name), str(definition or "")))
    return frozenset(objects)


@dataclass(frozen=True)
class Residue:
    """The difference a failed revision made: what it added, changed and removed."""

    added: tuple[SchemaObject, ...]
    changed: tuple[SchemaObject, ...]
    removed: tuple[SchemaObject, ...]

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    @property
    def new_tables(self) -> set[str]:
        return {table for kind, table, _, _ in self.added if kind == "table"}

    def _added_parts(self) -> list[SchemaObject]:
        """What was added, without the columns, indexes and keys of tables that are new."""
        tables = self.new_tables
        return [item for item in self.added if item[0] == "table" or item[1] not in tables]

    def describe(self) -> list[str]:
        """Short phrases, e.g. `created table audit_log`, `added column users.nickname`."""
        return (
            [_phrase("created", "added", item) for item in self._added_parts()]
            + [_phrase("changed", "changed", item) for item in self.changed]
            + [_phrase("dropped", "dropped", item) for item in self.removed]
        )

    def undo_statements(self) -> list[str]:
        """SQL that removes what was added, keys and indexes before the columns they use;
        changes and drops cannot be undone from a schema listing (the backup can)."""
        parts = sorted(self._added_parts(), key=lambda item: -_ORDER[item[0]])
        return [_undo(item) for item in parts]

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "left_behind": self.describe(),
            "undo": self.undo_statements(),
        }


def compare(before: frozenset[SchemaObject], after: frozenset[SchemaObject]) -> Residue:
    """What changed between two snapshots; an object whose definition differs is `changed`."""
    before_keys = {item[:3]: item for item in before}
    after_keys = {item[:3]: item for item in after}
    added = [item for key, item in after_keys.items() if key not in before_keys]
    removed = [item for key, item in before_keys.items() if key not in after_keys]
    changed = [
        item for key, item in after_keys.items() if key in before_keys and before_keys[key] != item
    ]
    return Residue(*(tuple(sorted(items, key=_order)) for items in (added, changed, removed)))


def recovery_advice(residue: Residue, *, stamp: str | None, failed: str, at: str) -> str:
    """One sentence: what is left, and the two ways out (undo it, or finish and stamp).

    `stamp` is the task that records the revision (`invoke dev.stamp --rev X`); a collection
    without one (a fleet) gets Alembic's own command on that database instead.
    """
    left = ", ".join(residue.describe())
    record = f"`{stamp}`" if stamp else f"record it with `alembic stamp {failed}` on that database"
    return (
        f"MySQL/MariaDB cannot roll DDL back: revision {failed} left {left} "
        f"while the database stays at {at}; undo it (statements in the run log and above) "
        f"and re-run, or finish the revision by hand and {record}"
    )


_ORDER = {"table": 0, "column": 1, "index": 2, "foreign key": 3}


def _order(item: SchemaObject) -> tuple[int, str, str]:
    return (_ORDER[item[0]], item[1], item[2])


def _undo(item: SchemaObject) -> str:
    kind, table, name, _ = item
    if kind == "table":
        return f"DROP TABLE `{table}`"
    if kind == "column":
        return f"ALTER TABLE `{table}` DROP COLUMN `{name}`"
    if kind == "index":
        return f"ALTER TABLE `{table}` DROP INDEX `{name}`"
    return f"ALTER TABLE `{table}` DROP FOREIGN KEY `{name}`"


def _phrase(table_verb: str, other_verb: str, item: SchemaObject) -> str:
    kind, table, name, _ = item
    if kind == "table":
        return f"{table_verb} table {table}"
    return f"{other_verb} {kind} {table}.{name}"
