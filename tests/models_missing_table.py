"""The application's models as a team that forgot to import one of them sees them: everything
but `memberships`. Autogenerate against this metadata writes a revision that drops a table."""

from __future__ import annotations

from sqlalchemy import MetaData

from database.base import NAMING_CONVENTION
from database.imports import import_all_models

metadata = MetaData(naming_convention=NAMING_CONVENTION)
for _table in import_all_models().sorted_tables:
    if _table.name != "memberships":
        _table.to_metadata(metadata)
