"""The application's models after one change each to an existing table, for lock-safe
autogenerate (tests/test_safe_revisions.py): select one with
INVOKE_MIGRATIONS_METADATA=tests.models_safe:<name>."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, Integer, MetaData, UniqueConstraint

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
