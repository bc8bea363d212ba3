"""The application's models after a column rename, for expand/contract autogenerate
(tests/online/test_expand_contract.py): select one with
INVOKE_MIGRATIONS_METADATA=tests.models_online:<name>."""

from __future__ import annotations

from sqlalchemy import Column, Index, MetaData, String

from database.base import NAMING_CONVENTION
from database.imports import import_all_models


def _renamed(new_type) -> MetaData:  # type: ignore[no-untyped-def]
    """users.display_name becomes users.full_name (NOT NULL, indexed)."""
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    for table in import_all_models().sorted_tables:
        table.to_metadata(metadata)
    users = metadata.tables["users"]
    users._columns.remove(users.c.display_name)  # a test's model edit: the column is gone
    full_name = Column("full_name", new_type, nullable=False, info={"renamed_from": "display_name"})
    users.append_column(full_name)
    Index("ix_users_full_name", full_name)
    return metadata


def rename() -> MetaData:
    """The same type under a new name."""
    return _renamed(String(120))


def rename_retype() -> MetaData:
    """A new name and a type whose change would rewrite the table (varchar(120) -> text is
    free; to varchar(80) is not)."""
    return _renamed(String(80))
