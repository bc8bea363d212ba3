"""`with op.get_context().autocommit_block(), op.lock_retries():` short lock waits, retried.

A DDL statement on a live table (ADD COLUMN, CREATE TRIGGER, ADD CONSTRAINT ... NOT VALID, SET
NOT NULL) needs a strong lock for an instant, but it must first wait for every transaction
holding a conflicting lock; and while it waits, every writer that arrives after it queues
behind it (PostgreSQL grants locks in order). One long reader, a batch or an autovacuum in its
way, and the whole application stops for as long as the session's `lock_timeout` (seconds).
The answer of GitLab's `with_lock_retries` and of pgroll: wait only briefly (here 50 ms, so the
queue behind the statement is at most that long), give up, let the queue drain, try again.

Inside this block each statement on the migration connection runs in a transaction of its own
under that short `lock_timeout` (`SET LOCAL`: the session's own setting never changes) and, when
it loses the wait (SQLSTATE 55P03), is sent again after a pause that grows, up to `retries`
times; then the error goes up as usual. Only in autocommit (inside Alembic's
`autocommit_block()`): a statement can be sent again only when its failure did not abort a
transaction holding the locks of the statements before it. Not for what cannot run in a
transaction (CREATE INDEX CONCURRENTLY: it waits for other transactions, not briefly). The
retry sits at the driver's `execute` (SQLAlchemy's `do_execute` event), below the lock checks,
which see each statement once; the statement guard judges every try of it and trusts the
BEGIN, SET LOCAL and COMMIT around it (the tasks' own). PostgreSQL only; elsewhere the block
does nothing. `--sql` writes a comment saying how the statements would run.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from alembic.operations import Operations, ops
from sqlalchemy import event

from tasks.core.errors import UsageError
from tasks.guard import statement_guard

DEFAULT_LOCK_TIMEOUT = 0.05  # seconds a statement may queue (and make writers queue behind it)
DEFAULT_RETRIES = 40  # then the error goes up: about 25 s of trying in all
LOCK_NOT_AVAILABLE = "55P03"


def pause_before(attempt: int) -> float:
    """Seconds to wait before try `attempt` (1, 2, ...): growing, capped at 1 s, with jitter so
    that two migrations, or a migration and a cron job, do not retry in step."""
    return min(0.05 * 1.5**attempt, 1.0) * random.uniform(0.5, 1.0)  # noqa: S311 (not crypto)


@Operations.register_operation("lock_retries")
class LockRetriesOp(ops.MigrateOperation):
    """`op.lock_retries(lock_timeout=0.05, retries=40)`: a context manager, not an operation
    of its own; registered so that every revision has it as `op.lock_retries`."""

    @classmethod
    def lock_retries(
        cls,
        operations: Operations,
        *,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
    ) -> Any:
        """Each statement of the block: `lock_timeout` seconds of lock wait, then retried."""
        if isinstance(lock_timeout, bool) or not isinstance(lock_timeout, int | float):
            raise UsageError("op.lock_retries: lock_timeout must be a number of seconds > 0")
        if lock_timeout <= 0 or lock_timeout * 1000 < 1:
            raise UsageError("op.lock_retries: lock_timeout must be at least 0.001 seconds")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise UsageError("op.lock_retries: retries must be an integer >= 0")
        return _lock_retries(operations, float(lock_timeout), retries)

    def to_diff_tuple(self) -> Any:
        raise NotImplementedError("not a model difference")


@contextmanager
def _lock_retries(operations: Operations, lock_timeout: float, retries: int) -> Iterator[None]:
    context = operations.get_context()
    limit = f"SET LOCAL lock_timeout = '{max(1, round(lock_timeout * 1000))}ms'"
    if context.as_sql:
        context.impl.static_output(
            f"-- op.lock_retries: each statement below in its own transaction after {limit}, "
            f"sent again up to {retries} times when it loses the lock wait"
        )
        yield
        return
    connection = operations.get_bind()
    if connection.dialect.name != "postgresql":
        yield
        return
    # The driver's own connection: the statement guard may hand out a wrapper whose cursors
    # judge what they run, and SQLAlchemy's cursors (which are those) report the real one.
    handed_out: Any = connection.connection.dbapi_connection
    probe = handed_out.cursor()
    real = probe.connection
    probe.close()
    if not getattr(real, "autocommit", False):
        raise UsageError(
            "op.lock_retries() belongs inside op.get_context().autocommit_block(): a statement "
            "can be sent again only when its failure did not abort a transaction"
        )
    retrier = _Retrier(real, handed_out, limit, retries)
    engine = connection.engine
    event.listen(engine, "do_execute", retrier.do_execute)
    event.listen(engine, "do_execute_no_params", retrier.do_execute_no_params)
    try:
        yield
    finally:
        event.remove(engine, "do_execute", retrier.do_execute)
        event.remove(engine, "do_execute_no_params", retrier.do_execute_no_params)


class _Retrier:
    """The `do_execute` listeners: a statement on this one driver connection, in autocommit,
    runs in a transaction of its own after `SET LOCAL lock_timeout` (a literal: the statement
    guard passes a positive timeout, and nothing of the session's own settings changes), and is
    sent again until it gets its locks; every other connection of the engine is left alone."""

    def __init__(self, dbapi_connection: Any, handed_out: Any, limit: str, retries: int) -> None:
        self.dbapi_connection = dbapi_connection
        # BEGIN, SET LOCAL and COMMIT go through a cursor of their own (the statement's keeps
        # its result for SQLAlchemy), taken where revisions take theirs: the guard sees them.
        self.handed_out = handed_out
        self.limit = limit
        self.retries = retries
        self.retried = 0  # statements sent again, over the block

    def do_execute(self, cursor: Any, statement: str, parameters: Any, _context: Any) -> Any:
        if not self._mine(cursor):
            return None
        self._send(cursor, lambda: cursor.execute(statement, parameters))
        return True

    def do_execute_no_params(self, cursor: Any, statement: str, _context: Any) -> Any:
        if not self._mine(cursor):
            return None
        self._send(cursor, lambda: cursor.execute(statement))
        return True

    def _mine(self, cursor: Any) -> bool:
        connection = getattr(cursor, "connection", None)
        return connection is self.dbapi_connection and bool(getattr(connection, "autocommit", 0))

    def _send(self, _cursor: Any, execute: Any) -> None:
        control = self.handed_out.cursor()
        try:
            self._attempts(control, execute)
        finally:
            control.close()

    def _attempts(self, cursor: Any, execute: Any) -> None:
        attempt = 0
        while True:
            self._control(cursor, "BEGIN", self.limit)
            try:
                execute()
            except BaseException as error:
                self._control(cursor, "ROLLBACK")
                code = getattr(error, "pgcode", None) or getattr(error, "sqlstate", None)
                if code != LOCK_NOT_AVAILABLE or attempt >= self.retries:
                    raise
                attempt += 1
                self.retried += 1
                time.sleep(pause_before(attempt))
                continue
            self._control(cursor, "COMMIT")
            return

    @staticmethod
    def _control(cursor: Any, *statements: str) -> None:
        """The tasks' own transaction control around the statement: the statement guard, which
        would refuse a revision's BEGIN (it ends the run's transaction), lets these through."""
        with statement_guard.trusting_current():
            for statement in statements:
                cursor.execute(statement)
