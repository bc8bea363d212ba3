"""Where a backfill stands: one row per backfill in `migration_backfill`, in the database itself.

The row is advanced in the same transaction as the batch it describes, so after any stop
(SIGTERM, a lost lock, SIGKILL, a crash) the database says exactly which batches committed: a
re-run starts after the last one, never repeats one and never skips one. A finished backfill
keeps its row ("finished") until its revision is recorded as applied, in that revision's own
transaction; then the row becomes "applied", the audit trail of what ran and how many rows it
touched. A revision downgraded and applied again therefore runs its backfill again, while a
revision that failed after its backfill finished does not repeat it.

Created on first use, in its own MetaData, and listed in TOOL_TABLES so autogenerate, `check`
and sync never see it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection

BACKFILL_TABLE = "migration_backfill"
RUNNING, FINISHED, APPLIED = "running", "finished", "applied"


@cache
def backfill_table() -> Table:
    from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, String, Table, Text

    return Table(
        BACKFILL_TABLE,
        MetaData(),
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("name", String(64), nullable=False, index=True),
        Column("table_name", String(255), nullable=False),
        Column("description", Text, nullable=False),
        Column("revision", String(255)),
        Column("state", String(16), nullable=False),
        Column("position", Text),
        Column("rows_done", BigInteger, nullable=False),
        Column("batches", Integer, nullable=False),
        Column("started_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        Column("finished_at", DateTime(timezone=True)),
    )


@dataclass
class Record:
    """One backfill's row: where it stands."""

    id: int
    state: str
    position: list[Any] | None
    rows_done: int
    batches: int

    @property
    def finished(self) -> bool:
        return self.state == FINISHED


def now() -> datetime:
    return datetime.now(UTC)


def ensure_table(connection: Connection) -> None:
    """Create the table unless it exists (a concurrent creator's win is fine)."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import DBAPIError

    table = backfill_table()
    try:
        with connection.begin():
            table.create(connection, checkfirst=True)
    except DBAPIError:
        exists = inspect(connection).has_table(table.name)
        connection.rollback()
        if not exists:
            raise


def open_record(connection: Connection, name: str, table_name: str, description: str) -> Record:
    """The unfinished or finished row of backfill `name`, or a new one (committed)."""
    from sqlalchemy import select

    table = backfill_table()
    with connection.begin():
        row = connection.execute(
            select(table)
            .where(table.c.name == name, table.c.state.in_([RUNNING, FINISHED]))
            .order_by(table.c.id.desc())
            .limit(1)
        ).first()
        if row is not None:
            return _record(row)
        moment = now()
        result = connection.execute(
            table.insert().values(
                name=name,
                table_name=table_name,
                description=description,
                state=RUNNING,
                position=None,
                rows_done=0,
                batches=0,
                started_at=moment,
                updated_at=moment,
            )
        )
        (new_id,) = result.inserted_primary_key or (None,)
    if new_id is None:  # every supported driver reports the new key
        raise RuntimeError("the backfill record got no id")
    return Record(id=int(new_id), state=RUNNING, position=None, rows_done=0, batches=0)


def claim(connection: Connection, record_id: int) -> Record:
    """Inside a batch's transaction: lock the row (a write first, so SQLite takes its write lock
    before reading) and read where the backfill stands."""
    from sqlalchemy import select

    table = backfill_table()
    connection.execute(
        table.update().where(table.c.id == record_id).values(batches=table.c.batches)
    )
    row = connection.execute(select(table).where(table.c.id == record_id)).one()
    return _record(row)


def advance(connection: Connection, record_id: int, position: list[Any], rows: int) -> None:
    """Inside the batch's transaction: the batch up to `position` is done, `rows` updated."""
    table = backfill_table()
    connection.execute(
        table.update()
        .where(table.c.id == record_id)
        .values(
            position=encode_position(position),
            rows_done=table.c.rows_done + rows,
            batches=table.c.batches + 1,
            updated_at=now(),
        )
    )


def finish(connection: Connection, record_id: int) -> None:
    table = backfill_table()
    moment = now()
    connection.execute(
        table.update()
        .where(table.c.id == record_id)
        .values(state=FINISHED, updated_at=moment, finished_at=moment)
    )


def mark_applied(connection: Connection, record_ids: list[int], revision: str | None) -> None:
    """In the revision's own transaction, as it is recorded: its backfills are history now."""
    table = backfill_table()
    connection.execute(
        table.update()
        .where(table.c.id.in_(record_ids), table.c.state == FINISHED)
        .values(state=APPLIED, revision=revision)
    )


def encode_position(position: list[Any]) -> str:
    return json.dumps(position, default=str)


def _record(row: Any) -> Record:
    position = json.loads(row.position) if row.position is not None else None
    return Record(
        id=int(row.id),
        state=row.state,
        position=position,
        rows_done=int(row.rows_done),
        batches=int(row.batches),
    )
