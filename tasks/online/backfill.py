"""`op.backfill(table, {column: sql_expression}, where=..., batch_size=N)`: fill a live table in
short batches, resumable after any stop.

One `UPDATE` of millions of rows holds its row locks and its snapshot for minutes, bloats the
table in one go, and on a stop loses everything. This walks the primary key instead: each batch
is its own short transaction under `lock_timeout` and `statement_timeout`, updates the rows whose
key lies after the previous batch's last key and up to its own, and records that last key in
`migration_backfill` (bookkeeping.py) in the same transaction. A stop at any moment (SIGTERM,
Ctrl-C, a lost migration lock, SIGKILL, a crash) leaves either the whole batch and its position
or neither, so a re-run continues after the last committed batch: no batch runs twice, none is
skipped. Between batches it pauses (`pause` seconds) so writers and replicas keep up.

A writer that touches a row of the batch waits until the batch commits, so the batch's duration
is the writer's worst wait, and a fixed row count takes ten times longer on a loaded machine or
a table with triggers. Batches are therefore sized by time: `batch_size` is the ceiling, and a
batch that took longer than `batch_seconds` makes the next one smaller in proportion (one that
lost a lock wait halves it); quick ones let it grow back (BatchSizer). The per-batch
`lock_timeout` is short for the same reason: while a batch waits for one row, the writers of the
rows it already holds wait behind it.

It runs outside the revision's transaction: what the revision did before it is committed first
(Alembic's `autocommit_block`, so an `add_column` just before it is visible and its lock is
released) and the batches run on a connection of their own. `--sql` prints a commented
description: a walk along the primary key is not one static statement. Registered through
Alembic's operation plugin API; alembic/env.py imports this module, so every revision has it.
PostgreSQL, MariaDB/MySQL and SQLite.
"""

from __future__ import annotations

import hashlib
import json
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from alembic.operations import Operations, ops

from tasks.core.errors import DatabaseError, UsageError
from tasks.guard import revision_progress
from tasks.online import bookkeeping
from tasks.online.pacing import (
    DEFAULT_BATCH_SECONDS,
    BatchSizer,
    is_lock_conflict,
    session_limits,
    set_transaction_limits,
)
from tasks.online.progress import BackfillProgress, current_sink

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

DEFAULT_BATCH_SIZE = 1000
DEFAULT_PAUSE = 0.01  # seconds between batches
DEFAULT_LOCK_TIMEOUT = 0.1  # seconds one batch waits for a row lock held by a writer
DEFAULT_STATEMENT_TIMEOUT = 30.0  # seconds one batch's statement may run
DEFAULT_RETRIES = 10  # a batch that lost a lock wait or a deadlock is tried again this often


@dataclass(frozen=True)
class BackfillSpec:
    """What to fill, how, and under which limits: everything `op.backfill` was given."""

    table: str
    values: tuple[tuple[str, str], ...]
    where: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    pause: float = DEFAULT_PAUSE
    batch_seconds: float | None = DEFAULT_BATCH_SECONDS
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    schema: str | None = None
    name: str | None = None

    @property
    def key(self) -> str:
        """The bookkeeping name: given, or derived from what the backfill does (not from its
        batch size or pause, which a re-run may change)."""
        if self.name:
            return self.name[:64]
        identity = json.dumps([self.schema, self.table, list(self.values), self.where])
        return "backfill-" + hashlib.sha256(identity.encode()).hexdigest()[:32]

    @property
    def label(self) -> str:
        table = f"{self.schema}.{self.table}" if self.schema else self.table
        return f"{table}.{','.join(column for column, _ in self.values)}"

    def describe(self) -> str:
        sets = ", ".join(f"{column} = {expression}" for column, expression in self.values)
        where = f" WHERE {self.where}" if self.where else ""
        table = self.label.rsplit(".", 1)[0]
        return one_line(f"UPDATE {table} SET {sets}{where}")  # noqa: S608 (a description)


def one_line(text: str) -> str:
    return " ".join(text.split())


def validated(
    table: Any, values: Any, where: Any, batch_size: Any, pause: Any, timeouts: tuple[Any, Any]
) -> None:
    """Bad arguments are a one-line error before anything touches the database."""
    if not isinstance(table, str) or not table:
        raise UsageError(f"op.backfill: the table must be a name, not {table!r}")
    if not isinstance(values, Mapping) or not values:
        raise UsageError("op.backfill: values must be a non-empty {column: 'SQL expression'}")
    for column, expression in values.items():
        if not isinstance(column, str) or not isinstance(expression, str) or not expression.strip():
            raise UsageError(
                f"op.backfill: {column!r}: each value is a column name and an SQL expression"
            )
    if where is not None and (not isinstance(where, str) or not where.strip()):
        raise UsageError("op.backfill: where must be an SQL condition or None")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"op.backfill: batch_size must be positive (an integer): {batch_size!r}")
    for label, number in (("pause", pause), ("lock_timeout", timeouts[0])):
        if isinstance(number, bool) or not isinstance(number, int | float) or number < 0:
            raise UsageError(f"op.backfill: {label} must be a number of seconds >= 0")
    statement_timeout = timeouts[1]
    if not isinstance(statement_timeout, int | float) or isinstance(statement_timeout, bool):
        raise UsageError("op.backfill: statement_timeout must be a number of seconds > 0")
    if statement_timeout <= 0:
        raise UsageError("op.backfill: statement_timeout must be a number of seconds > 0")


def validated_batch_seconds(batch_seconds: Any) -> float | None:
    """None (a fixed batch_size) or a positive number of seconds."""
    if batch_seconds is None:
        return None
    if (
        isinstance(batch_seconds, bool)
        or not isinstance(batch_seconds, int | float)
        or batch_seconds <= 0
    ):
        raise UsageError(
            "op.backfill: batch_seconds must be a number of seconds > 0, or None for a fixed "
            f"batch_size: {batch_seconds!r}"
        )
    return float(batch_seconds)


@Operations.register_operation("backfill")
class BackfillOp(ops.MigrateOperation):
    """`op.backfill("people", {"email_lower": "lower(email)"}, where="email_lower IS NULL")`."""

    def __init__(self, spec: BackfillSpec) -> None:
        self.spec = spec

    @classmethod
    def backfill(
        cls,
        operations: Operations,
        table_name: str,
        values: Mapping[str, str],
        *,
        where: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        pause: float = DEFAULT_PAUSE,
        batch_seconds: float | None = DEFAULT_BATCH_SECONDS,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        schema: str | None = None,
        name: str | None = None,
    ) -> Any:
        """Fill `values` ({column: SQL expression}) in batches along the primary key."""
        validated(table_name, values, where, batch_size, pause, (lock_timeout, statement_timeout))
        target = validated_batch_seconds(batch_seconds)
        spec = BackfillSpec(
            table=table_name,
            values=tuple(values.items()),
            where=where,
            batch_size=batch_size,
            pause=float(pause),
            batch_seconds=target,
            lock_timeout=float(lock_timeout),
            statement_timeout=float(statement_timeout),
            retries=max(int(retries), 0),
            schema=schema,
            name=name,
        )
        return operations.invoke(cls(spec))

    def to_diff_tuple(self) -> Any:
        raise NotImplementedError("not a model difference")


def offline_description(spec: BackfillSpec) -> list[str]:
    """`--sql`: what would run, as SQL comments (the classifier reads nothing in them)."""
    return [
        f"-- op.backfill {spec.label}: not one static statement; run online, it repeats",
        f"--   {spec.describe()}",
        f"--   in batches of {sizing(spec)} along the primary key, each batch its own "
        f"transaction (lock_timeout {spec.lock_timeout:g}s, statement_timeout "
        f"{spec.statement_timeout:g}s), {spec.pause:g}s apart;",
        f"--   resumable: its position is kept in {bookkeeping.BACKFILL_TABLE}",
    ]


def sizing(spec: BackfillSpec) -> str:
    if spec.batch_seconds is None:
        return f"{spec.batch_size:,} rows"
    return f"up to {spec.batch_size:,} rows sized to about {spec.batch_seconds:g}s each"


@Operations.implementation_for(BackfillOp)
def run_backfill_op(operations: Operations, operation: BackfillOp) -> None:
    context = operations.get_context()
    spec = operation.spec
    if context.as_sql:
        context.impl.static_output("\n".join(offline_description(spec)))
        return
    # Resumable from its saved position: a revision that changed nothing before it may run again
    # after a stop (SIGTERM, kill -9, a lost lock) instead of staying failed until `repair`.
    revision_progress.resumable_from_here()
    with context.autocommit_block():  # the revision's work so far commits; its locks go
        migration_connection = operations.get_bind()
        record_id = Backfill(spec, migration_connection).run()
    _archive_when_recorded(context, record_id)


# Finished backfills, per migration context, archived when their revision is recorded.
_pending: weakref.WeakKeyDictionary[Any, list[int]] = weakref.WeakKeyDictionary()


def _archive_when_recorded(context: Any, record_id: int) -> None:
    from tasks.core.alembic_internals import call_when_version_recorded

    _pending.setdefault(context, []).append(record_id)
    call_when_version_recorded(context, _archive)


def _archive(*, ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
    """Alembic's on_version_apply: the revision that ran the backfills is being recorded."""
    record_ids = _pending.pop(ctx, [])
    if not record_ids:
        return
    revision = step.up_revision_id if step.is_upgrade else f"{step.up_revision_id} (downgrade)"
    bookkeeping.mark_applied(ctx.connection, record_ids, revision)


# --- the walk ---------------------------------------------------------------------------------


class Backfill:
    """One backfill on its own connection: validate, open or resume its record, walk, report."""

    def __init__(self, spec: BackfillSpec, migration_connection: Connection) -> None:
        self.spec = spec
        self.migration_connection = migration_connection
        self.dialect = migration_connection.dialect.name

    def run(self) -> int:
        from tasks.core.engines import describe_database_error

        try:
            with self._connection() as connection:
                return self._walk(connection)
        except (DatabaseError, UsageError):
            raise
        except Exception as error:
            from sqlalchemy.exc import SQLAlchemyError

            if not isinstance(error, SQLAlchemyError):
                raise
            raise DatabaseError(
                f"backfill {self.spec.label}: {describe_database_error(error)}"
            ) from None

    def _connection(self) -> Any:
        """A connection of the migration's engine, in the same schema and with its options."""
        options = dict(self.migration_connection.get_execution_options())
        options.pop("isolation_level", None)
        connection = self.migration_connection.engine.connect()
        if options:
            connection = connection.execution_options(**options)
        if self.dialect == "postgresql":
            path = self.migration_connection.exec_driver_sql("SHOW search_path").scalar()
            connection.exec_driver_sql(
                "SELECT set_config('search_path', %(p)s, false)", {"p": path}
            )
            connection.commit()
        connection.info["backfill"] = True
        return connection

    def _walk(self, connection: Connection) -> int:
        from tasks.guard.lock import verify_lock

        shape = TableShape.read(connection, self.spec)
        shape.try_expressions(connection)
        session_limits(connection, self.spec.lock_timeout, self.spec.statement_timeout)
        bookkeeping.ensure_table(connection)
        record = bookkeeping.open_record(
            connection, self.spec.key, self.spec.table, self.spec.describe()
        )
        sink = current_sink()
        progress = BackfillProgress(
            self.spec.label, shape.estimate(connection), rows_before=record.rows_done, sink=sink
        )
        resumed = record.batches > 0 or record.finished
        # The walk ends at the last key there is now: rows inserted later are the application's
        # (or the expand trigger's) to fill, and chasing them would never end under inserts.
        shape.end = shape.last_key(connection)
        if shape.end is None and not record.finished:  # an empty table: nothing to walk
            with connection.begin():
                bookkeeping.finish(connection, record.id)
            record.state = bookkeeping.FINISHED
        sizer = BatchSizer(self.spec.batch_size, self.spec.batch_seconds)
        while not record.finished:
            verify_lock(f"before a batch of the backfill of {self.spec.label}")
            rows, scanned, record = self._batch_with_retries(connection, shape, record.id, sizer)
            if record.finished:
                break
            progress.batch_done(rows, scanned)
            if self.spec.pause:
                time.sleep(self.spec.pause)
        seconds = progress.finished(resumed)
        if sink.results is not None:
            sink.results.append(
                {
                    "table": self.spec.label,
                    "rows": record.rows_done,
                    "batches": record.batches,
                    "seconds": round(seconds, 3),
                    "resumed": resumed,
                }
            )
        return record.id

    def _batch_with_retries(
        self, connection: Connection, shape: TableShape, record_id: int, sizer: BatchSizer
    ) -> tuple[int, int, bookkeeping.Record]:
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                with connection.begin():
                    set_transaction_limits(
                        connection, self.spec.lock_timeout, self.spec.statement_timeout
                    )
                    done = run_batch(connection, shape, self.spec, record_id, sizer.size)
                sizer.took(time.monotonic() - started)
                return done
            except Exception as error:
                if attempt >= self.spec.retries or not is_lock_conflict(error):
                    raise self._stopped(connection, record_id, error) from None
                attempt += 1
                sizer.conflict()
                time.sleep(min(0.05 * 2**attempt, 2.0))

    def _stopped(self, connection: Connection, record_id: int, error: Exception) -> Exception:
        from sqlalchemy.exc import SQLAlchemyError

        from tasks.core.engines import describe_database_error

        if not isinstance(error, SQLAlchemyError):
            return error
        done = ""
        try:
            record = bookkeeping.claim(connection, record_id)
            connection.rollback()
            done = f" after {record.rows_done:,} rows in {record.batches:,} batches"
        except Exception:  # the error itself matters more than the count
            connection.rollback()
        return DatabaseError(
            f"backfill {self.spec.label} stopped{done}: {describe_database_error(error)}; "
            "a re-run continues after the last committed batch"
        )


def run_batch(
    connection: Connection,
    shape: TableShape,
    spec: BackfillSpec,
    record_id: int,
    size: int | None = None,
) -> tuple[int, int, bookkeeping.Record]:
    """One batch of `size` keys (spec.batch_size when not given), inside the caller's
    transaction: (rows updated, keys scanned, the record)."""
    record = bookkeeping.claim(connection, record_id)
    if record.finished:
        return 0, 0, record
    upper, scanned = shape.batch_end(connection, record.position, size or spec.batch_size)
    if upper is None:
        bookkeeping.finish(connection, record_id)
        record.state = bookkeeping.FINISHED
        return 0, 0, record
    rows = shape.update(connection, record.position, upper)
    bookkeeping.advance(connection, record_id, upper, rows)
    record.position = upper
    record.rows_done += rows
    record.batches += 1
    return rows, scanned, record


# --- SQL per dialect --------------------------------------------------------------------------
# Statements are built as text (noqa: S608): identifiers are quoted by the dialect's own
# preparer, key values are bound parameters, and the expressions and condition are the revision
# author's SQL, which is what op.backfill exists to run.


@dataclass
class TableShape:
    """The table's quoted name and primary key, and the statements a batch runs."""

    spec: BackfillSpec
    qualified: str
    key_columns: list[str]
    dialect: str
    end: list[Any] | None = None  # the last key the walk covers

    @classmethod
    def read(cls, connection: Connection, spec: BackfillSpec) -> TableShape:
        from sqlalchemy import inspect

        inspector = inspect(connection)
        if not inspector.has_table(spec.table, schema=spec.schema):
            raise UsageError(f"op.backfill: no table {spec.label.rsplit('.', 1)[0]!r}")
        columns = {column["name"] for column in inspector.get_columns(spec.table, spec.schema)}
        missing = [column for column, _ in spec.values if column not in columns]
        if missing:
            raise UsageError(f"op.backfill: {spec.table} has no column {', '.join(missing)}")
        key = inspector.get_pk_constraint(spec.table, spec.schema).get("constrained_columns")
        if not key:
            raise UsageError(
                f"op.backfill: {spec.table} has no primary key to walk; batches need one"
            )
        connection.rollback()
        preparer = connection.dialect.identifier_preparer
        qualified = preparer.quote(spec.table)
        if spec.schema:
            qualified = f"{preparer.quote_schema(spec.schema)}.{qualified}"
        return cls(spec, qualified, [preparer.quote(c) for c in key], connection.dialect.name)

    def _key(self) -> str:
        if len(self.key_columns) == 1:
            return self.key_columns[0]
        return "(" + ", ".join(self.key_columns) + ")"

    def _params(self, prefix: str, values: list[Any]) -> tuple[str, dict[str, Any]]:
        names = [f"{prefix}{index}" for index in range(len(values))]
        binds = ", ".join(f":{name}" for name in names)
        text = binds if len(names) == 1 else f"({binds})"
        return text, dict(zip(names, values, strict=True))

    def _after(self, position: list[Any] | None) -> tuple[str, dict[str, Any]]:
        """Keys after `position` and up to the walk's end."""
        clauses: list[str] = []
        params: dict[str, Any] = {}
        if position is not None:
            binds, params = self._params("lo", position)
            clauses.append(f"{self._key()} > {binds}")
        if self.end is not None:
            binds, end_params = self._params("end", self.end)
            clauses.append(f"{self._key()} <= {binds}")
            params = {**params, **end_params}
        return " AND ".join(clauses) or "1 = 1", params

    def last_key(self, connection: Connection) -> list[Any] | None:
        from sqlalchemy import text

        columns = ", ".join(self.key_columns)
        descending = ", ".join(f"{column} DESC" for column in self.key_columns)
        try:
            found = connection.execute(
                text(f"SELECT {columns} FROM {self.qualified} ORDER BY {descending} LIMIT 1")  # noqa: S608
            ).first()
        finally:
            connection.rollback()
        return list(found) if found is not None else None

    def try_expressions(self, connection: Connection) -> None:
        """Compile the expressions and condition against the table without touching a row: a
        typo is an error before any bookkeeping row exists."""
        from sqlalchemy import text

        select = ", ".join(f"({expression})" for _, expression in self.spec.values)
        where = f"({self.spec.where}) AND " if self.spec.where else ""
        try:
            connection.execute(text(f"SELECT {select} FROM {self.qualified} WHERE {where}1 = 0"))  # noqa: S608
        finally:
            connection.rollback()

    def estimate(self, connection: Connection) -> int | None:
        """The table's approximate row count, for the ETA (never a full count on a big table)."""
        from sqlalchemy import text

        try:
            if self.dialect == "postgresql":
                value = connection.execute(
                    text("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(:t)"),
                    {"t": self.qualified},
                ).scalar()
            elif self.dialect in {"mysql", "mariadb"}:
                value = connection.execute(
                    text(
                        "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE "
                        "TABLE_SCHEMA = coalesce(:s, DATABASE()) AND TABLE_NAME = :t"
                    ),
                    {"s": self.spec.schema, "t": self.spec.table},
                ).scalar()
            else:
                count = f"SELECT count(*) FROM {self.qualified}"  # noqa: S608
                value = connection.execute(text(count)).scalar()
        finally:
            connection.rollback()
        return int(value) if value is not None and int(value) > 0 else None

    def batch_end(
        self, connection: Connection, position: list[Any] | None, size: int
    ) -> tuple[list[Any] | None, int]:
        """The key of the batch's last row (`size` keys on, or the table's last) and how many
        keys the batch covers; None when no row is left after `position`."""
        from sqlalchemy import text

        after, params = self._after(position)
        columns = ", ".join(self.key_columns)
        order = ", ".join(self.key_columns)
        found = connection.execute(
            text(
                f"SELECT {columns} FROM {self.qualified} WHERE {after} "  # noqa: S608
                f"ORDER BY {order} LIMIT 1 OFFSET :offset"
            ),
            {**params, "offset": size - 1},
        ).first()
        if found is not None:
            return list(found), size
        descending = ", ".join(f"{column} DESC" for column in self.key_columns)
        last = connection.execute(
            text(
                f"SELECT {columns} FROM {self.qualified} WHERE {after} "  # noqa: S608
                f"ORDER BY {descending} LIMIT 1"
            ),
            params,
        ).first()
        if last is None:
            return None, 0
        remaining = connection.execute(
            text(f"SELECT count(*) FROM {self.qualified} WHERE {after}"),  # noqa: S608
            params,
        ).scalar()
        return list(last), int(remaining or 0)

    def update(self, connection: Connection, position: list[Any] | None, upper: list[Any]) -> int:
        from sqlalchemy import text

        after, params = self._after(position)
        bound, upper_params = self._params("hi", upper)
        preparer = connection.dialect.identifier_preparer
        sets = ", ".join(
            f"{preparer.quote(column)} = ({expression})" for column, expression in self.spec.values
        )
        where = f" AND ({self.spec.where})" if self.spec.where else ""
        result = connection.execute(
            text(
                f"UPDATE {self.qualified} SET {sets} "  # noqa: S608
                f"WHERE {after} AND {self._key()} <= {bound}{where}"
            ),
            {**params, **upper_params},
        )
        return int(result.rowcount or 0)
