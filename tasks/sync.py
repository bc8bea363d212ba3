"""Schema sync for local databases: create what the models have and the database lacks."""

from __future__ import annotations

from tasks.errors import DifferencesFound
from tasks.session import Session


def sync(session: Session, *, check: bool = False, backup: bool = False) -> None:
    """Create missing tables (interim: SQLAlchemy's create_all)."""
    from sqlalchemy import inspect

    metadata = session.metadata()
    with session.connect() as connection:
        existing = set(inspect(connection).get_table_names())
        missing = [table.name for table in metadata.sorted_tables if table.name not in existing]
        if check:
            for name in missing:
                session.console.line(f"  add_table {name}")
            if missing:
                raise DifferencesFound(f"{len(missing)} table(s) missing")
            session.console.line("local: in sync")
            return
        with connection.begin():
            metadata.create_all(connection)
    session.console.line(f"local: created {len(missing)} table(s)" if missing else "local: in sync")
