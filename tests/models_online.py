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


def _retyped(login_count_type, nickname_type) -> MetaData:  # type: ignore[no-untyped-def]
    """users gains login_count (NOT NULL, default 0, indexed) and nickname in the database
    (tests/online/test_type_change.py adds them by SQL); the model gives them these types."""
    from sqlalchemy import text

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    for table in import_all_models().sorted_tables:
        table.to_metadata(metadata)
    users = metadata.tables["users"]
    login_count = Column("login_count", login_count_type, nullable=False, server_default=text("0"))
    users.append_column(login_count)
    Index("ix_users_login_count", login_count)
    users.append_column(Column("nickname", nickname_type, nullable=True))
    return metadata


def retype() -> MetaData:
    """login_count integer -> bigint: a table rewrite on PostgreSQL."""
    from sqlalchemy import BigInteger

    return _retyped(BigInteger(), String(20))


def widen() -> MetaData:
    """nickname varchar(20) -> varchar(40): binary-coercible, no rewrite."""
    from sqlalchemy import Integer

    return _retyped(Integer(), String(40))


def uncastable() -> MetaData:
    """nickname varchar(20) -> integer, while every stored nickname is text ('n1', ...)."""
    from sqlalchemy import Integer

    return _retyped(Integer(), Integer())
