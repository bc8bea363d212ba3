"""The application's models after one change each to an existing table, for lock-safe
autogenerate (tests/migrate/test_safe_revisions.py): select one with
INVOKE_MIGRATIONS_METADATA=tests.models_safe:<name>."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

from database.base import NAMING_CONVENTION
from database.imports import import_all_models


def _copy() -> MetaData:
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    for table in import_all_models().sorted_tables:
        table.to_metadata(metadata)
    return metadata


def index() -> MetaData:
    """users.display_name gets an index."""
    metadata = _copy()
    users = metadata.tables["users"]
    Index("ix_users_display_name", users.c.display_name)
    return metadata


def foreign_key() -> MetaData:
    """projects gets reviewer_id, a foreign key to users."""
    metadata = _copy()
    metadata.tables["projects"].append_column(
        Column("reviewer_id", Integer, ForeignKey("users.id", ondelete="SET NULL"))
    )
    return metadata


def unique() -> MetaData:
    """A project's name is unique per owner."""
    metadata = _copy()
    projects = metadata.tables["projects"]
    projects.append_constraint(UniqueConstraint(projects.c.name, projects.c.owner_id))
    return metadata


def not_null() -> MetaData:
    """projects.description becomes NOT NULL."""
    metadata = _copy()
    metadata.tables["projects"].c.description.nullable = False
    return metadata


def new_table() -> MetaData:
    """A new table with an index: created in the same revision, so it needs no CONCURRENTLY."""
    metadata = _copy()
    Table(
        "labels",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("project_id", ForeignKey("projects.id"), index=True),
        Column("name", String(80), nullable=False, unique=True),
    )
    return metadata


def retype() -> MetaData:
    """projects.owner_id becomes BIGINT: a rewrite of the table, left for a human to consent to."""
    metadata = _copy()
    metadata.tables["projects"].c.owner_id.type = BigInteger()
    return metadata


def without_index() -> MetaData:
    """projects.name loses its index: dropped concurrently, and rebuilt so on downgrade."""
    metadata = _copy()
    projects = metadata.tables["projects"]
    projects.indexes.discard(next(i for i in projects.indexes if i.name == "ix_projects_name"))
    projects.c.name.index = None
    return metadata
