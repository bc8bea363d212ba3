"""Model sets for the sync tests: a database state and the models it is compared against.

Each scenario is a pair of MetaData builders, `database` (what the database was created from)
and `models` (what `local.sync` is pointed at through INVOKE_MIGRATIONS_METADATA). Attributes
`models__<scenario>` and `database__<scenario>` of this module are functions returning a fresh
MetaData, so `tests.sync_scenarios:models__missing_column` works as a `module:attribute` path.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
    true,
)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def base(
    *,
    parent_name: int = 50,
    code_nullable: bool = True,
    name_index: str = "ix_parent_name",
    code_unique: bool = False,
    child_fk: bool = True,
    child_fk_ondelete: str | None = None,
    qty_default: str = "0",
    name_index_columns: tuple[str, ...] = ("name",),
    name_index_unique: bool = False,
    code_index: bool = False,
    comment: str | None = None,
) -> MetaData:
    """Two related tables with an index, a unique constraint and a foreign key."""
    metadata = MetaData(naming_convention=NAMING)
    parent = Table(
        "parent",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("name", String(parent_name), nullable=False),
        Column("code", String(20), nullable=code_nullable, comment=comment),
        Index(name_index, *name_index_columns, unique=name_index_unique),
        comment=comment,
    )
    if code_index:
        Index("ix_parent_code", parent.c.code)
    if code_unique:
        parent.append_constraint(UniqueConstraint("code", name="uq_parent_code"))
    Table(
        "child",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("parent_id", Integer, nullable=True),
        Column("label", String(40)),
        Column("qty", Integer, nullable=False, server_default=text(qty_default)),
        UniqueConstraint("label", name="uq_child_label"),
        Index("ix_child_parent_id", "parent_id"),
        *(
            [
                ForeignKeyConstraint(
                    ["parent_id"],
                    ["parent.id"],
                    name="fk_child_parent_id_parent",
                    ondelete=child_fk_ondelete,
                )
            ]
            if child_fk
            else []
        ),
    )
    return metadata


def _with_table(metadata: MetaData) -> MetaData:
    Table(
        "note",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("parent_id", Integer, ForeignKey("parent.id"), index=True),
        Column("body", Text),
    )
    return metadata


def _with_column(metadata: MetaData, column: Column, index: bool = False) -> MetaData:
    table = metadata.tables["child"]
    table.append_column(column)
    if index:
        Index(f"ix_child_{column.name}", column)
    return metadata


class Colour(enum.Enum):
    red = "red"
    green = "green"
    blue = "blue"


class Shade(enum.Enum):
    red = "red"
    green = "green"
    blue = "blue"
    violet = "violet"


def rich(*, changed: bool = False, expression_index: bool = False) -> MetaData:
    """`base` plus a table with the types and server defaults applications use.

    `changed` alters several of them the way a model edit would.
    """
    metadata = base()
    item = Table(
        "item",
        metadata,
        Column("id", BigInteger, primary_key=True),
        Column("parent_id", Integer, ForeignKey("parent.id", ondelete="CASCADE"), index=True),
        Column(
            "title",
            String(200),
            nullable=False,
            server_default="unnamed" if changed else "untitled",
        ),
        Column("colour", Enum(Shade if changed else Colour, name="colour")),
        Column("active", Boolean, nullable=False, server_default=false() if changed else true()),
        Column("price", Numeric(12, 2) if changed else Numeric(10, 2)),
        Column("ratio", Float),
        Column("born", Date),
        Column("created_at", DateTime(timezone=not changed), server_default=func.now()),
        Column("payload", JSON),
        Column("blob", LargeBinary),
        Column("body", Text),
        UniqueConstraint("parent_id", "title"),
    )
    if expression_index:
        Index("ix_item_lower_title", func.lower(item.c.title))
    return metadata


def _with_item_column(metadata: MetaData) -> MetaData:
    metadata.tables["item"].append_column(Column("extra", String(10)))
    return metadata


@dataclass(frozen=True)
class Scenario:
    database: Callable[[], MetaData]
    models: Callable[[], MetaData]
    # kinds `--check` reports and its exit code, per dialect family (sqlite, postgresql and,
    # where it differs from postgresql, mysql)
    kinds: dict[str, set[str]]
    exit_codes: dict[str, int]


def _same(kinds: set[str], code: int) -> tuple[dict[str, set[str]], dict[str, int]]:
    return ({"sqlite": kinds, "postgresql": kinds}, {"sqlite": code, "postgresql": code})


SCENARIOS: dict[str, Scenario] = {
    "in_sync": Scenario(base, base, *_same(set(), 0)),
    "missing_table": Scenario(base, lambda: _with_table(base()), *_same({"missing_table"}, 4)),
    "missing_column": Scenario(
        base,
        lambda: _with_column(base(), Column("note", String(100))),
        *_same({"missing_column"}, 4),
    ),
    "missing_column_with_index": Scenario(
        base,
        lambda: _with_column(base(), Column("sku", String(30)), index=True),
        *_same({"missing_column", "missing_index"}, 4),
    ),
    "extra_column": Scenario(
        lambda: _with_column(base(), Column("legacy", String(10))),
        base,
        *_same({"extra_column"}, 5),
    ),
    "extra_table": Scenario(lambda: _with_table(base()), base, *_same({"extra_table"}, 5)),
    "type_change": Scenario(base, lambda: base(parent_name=120), *_same({"type_changed"}, 5)),
    "nullability_change": Scenario(
        base, lambda: base(code_nullable=False), *_same({"nullable_changed"}, 5)
    ),
    "default_change": Scenario(base, lambda: base(qty_default="1"), *_same({"default_changed"}, 5)),
    "renamed_index": Scenario(
        lambda: base(name_index="ix_parent_name_old"), base, *_same({"index_renamed"}, 5)
    ),
    "missing_unique": Scenario(
        base,
        lambda: base(code_unique=True),
        {"sqlite": {"missing_unique"}, "postgresql": {"missing_unique"}},
        {"sqlite": 5, "postgresql": 4},  # SQLite cannot add a constraint to a table
    ),
    "extra_unique": Scenario(
        lambda: base(code_unique=True),
        base,
        # MySQL's unique constraints are unique indexes; Alembic calls the extra one an index
        {"sqlite": {"extra_unique"}, "postgresql": {"extra_unique"}, "mysql": {"extra_index"}},
        {"sqlite": 5, "postgresql": 5},
    ),
    "missing_foreign_key": Scenario(
        lambda: base(child_fk=False),
        base,
        {"sqlite": {"missing_foreign_key"}, "postgresql": {"missing_foreign_key"}},
        {"sqlite": 5, "postgresql": 4},
    ),
    "changed_foreign_key": Scenario(
        base, lambda: base(child_fk_ondelete="CASCADE"), *_same({"foreign_key_changed"}, 5)
    ),
    "not_null_column_without_default": Scenario(
        base,
        lambda: _with_column(base(), Column("batch", Integer, nullable=False)),
        *_same({"missing_column"}, 5),  # the tests put rows in child
    ),
}


SCENARIOS.update(
    {
        "changed_index": Scenario(
            base, lambda: base(name_index_columns=("name", "code")), *_same({"index_changed"}, 5)
        ),
        "index_became_unique": Scenario(
            base, lambda: base(name_index_unique=True), *_same({"index_changed"}, 5)
        ),
        "missing_index": Scenario(
            base, lambda: base(code_index=True), *_same({"missing_index"}, 4)
        ),
        "extra_index": Scenario(lambda: base(code_index=True), base, *_same({"extra_index"}, 5)),
        "comment_change": Scenario(
            base,
            lambda: base(comment="what it is"),
            {"sqlite": set(), "postgresql": {"comment_changed", "table_comment_changed"}},
            {"sqlite": 0, "postgresql": 5},  # SQLite keeps no comments
        ),
        "rich_in_sync": Scenario(
            rich,
            rich,
            # Alembic's known false positives on MariaDB (true() stored as 1, now() as
            # current_timestamp()) are normalised like every other known one (issue 17)
            {"sqlite": set(), "postgresql": set(), "mysql": set()},
            {"sqlite": 0, "postgresql": 0, "mysql": 0},
        ),
        "rich_changes": Scenario(
            rich,
            lambda: rich(changed=True),
            {
                # Alembic compares neither PostgreSQL ENUM values nor, here, JSON
                "sqlite": {"type_changed", "default_changed"},
                "postgresql": {"type_changed", "default_changed"},
            },
            {"sqlite": 5, "postgresql": 5},
        ),
        "expression_index_in_sync": Scenario(
            lambda: rich(expression_index=True),
            lambda: rich(expression_index=True),
            *_same(set(), 0),
        ),
        "expression_index_table_missing_column": Scenario(
            lambda: rich(expression_index=True),
            lambda: _with_item_column(rich(expression_index=True)),
            *_same({"missing_column"}, 4),
        ),
        "missing_table_with_enum": Scenario(base, rich, *_same({"missing_table"}, 4)),
    }
)


def additive() -> MetaData:
    """Everything sync can add on every dialect at once: a table, columns, an index and foreign
    keys (one on a new column, which is how SQLite can add it)."""
    metadata = _with_table(base())
    child = metadata.tables["child"]
    child.append_column(Column("sku", String(30)))
    child.append_column(Column("rank", Integer, nullable=False, server_default=text("7")))
    child.append_column(Column("owner_id", Integer, ForeignKey("parent.id")))
    Index("ix_child_sku", child.c.sku)
    return metadata


def failing_apply() -> MetaData:
    """A column sync can add, then a unique index the existing rows violate."""
    metadata = _with_column(base(), Column("note", String(100)))
    Index("ix_parent_code_unique", metadata.tables["parent"].c.code, unique=True)
    return metadata


def additive_with_options() -> MetaData:
    """What SQLite cannot add to an existing table: a unique constraint, a foreign key with
    ON DELETE; PostgreSQL and MySQL can."""
    metadata = base(code_unique=True)
    metadata.tables["child"].append_column(
        Column("owner_id", Integer, ForeignKey("parent.id", ondelete="SET NULL"))
    )
    return metadata


def blocked_new_table() -> MetaData:
    """A new table whose foreign key needs a new NOT NULL column that cannot be added yet."""
    metadata = base()
    parent = metadata.tables["parent"]
    parent.append_column(Column("ext_id", Integer, nullable=False))
    parent.append_constraint(UniqueConstraint("ext_id", name="uq_parent_ext_id"))
    Table(
        "reference",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("parent_ext_id", Integer, ForeignKey("parent.ext_id")),
    )
    return metadata


APPLY_SCENARIOS = {
    "blocked_new_table": blocked_new_table,
    "additive": additive,
    "additive_with_options": additive_with_options,
    "failing_apply": failing_apply,
    "additive_and_type_change": lambda: _with_column(base(parent_name=120), Column("note", Text)),
    "new_column_with_foreign_key": lambda: _with_column(
        base(), Column("owner_id", Integer, ForeignKey("parent.id"))
    ),
}


def __getattr__(name: str) -> Callable[[], MetaData]:
    """`models__<scenario>` / `database__<scenario>` for INVOKE_MIGRATIONS_METADATA."""
    side, _, scenario = name.partition("__")
    if side in {"models", "database"} and scenario in SCENARIOS:
        return getattr(SCENARIOS[scenario], side)
    if side == "models" and scenario in APPLY_SCENARIOS:
        return APPLY_SCENARIOS[scenario]
    raise AttributeError(name)
