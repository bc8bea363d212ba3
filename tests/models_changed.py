"""The application's models after a change: a new `audit_notes` table and a `users.nickname`
column. Autogenerate against this metadata writes a revision that adds both."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, Text

from database.base import NAMING_CONVENTION
from database.imports import import_all_models

metadata = MetaData(naming_convention=NAMING_CONVENTION)
for _table in import_all_models().sorted_tables:
    _table.to_metadata(metadata)

metadata.tables["users"].append_column(Column("nickname", String(40), nullable=True))
Table(
    "audit_notes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("note", Text, nullable=False),
)
