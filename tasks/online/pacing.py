"""How fast a backfill may go: time-sized batches, per-batch limits, and which errors only mean
"someone else held what a batch needed" (worth another try).

Apart from backfill.py because none of it depends on what is being filled: the sizer is pure
arithmetic (tested without a database), and the limits and error codes are per dialect.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

DEFAULT_BATCH_SECONDS = 0.1  # the duration a batch aims at: a writer's worst wait behind it
MIN_BATCH_SIZE = 10  # the floor of the time-based sizing (a single row per batch would crawl)


class BatchSizer:
    """The next batch's row count: at most `ceiling`, shrunk when a batch took longer than
    `target` seconds, grown back slowly when batches are quick. No target: always `ceiling`.

    A batch's duration is how long a writer that needs one of its rows may wait, so the size
    follows the time a batch took, not a count fixed in advance: the same 1,000 rows take 20 ms
    on an idle server and half a second on a loaded one or behind a trigger."""

    GROWTH = 1.25  # a quick batch (under half the target) lets the next be this much larger
    MARGIN = 0.8  # a slow batch's successor aims a little under the target

    def __init__(self, ceiling: int, target: float | None) -> None:
        self.ceiling = ceiling
        self.target = target
        self.floor = min(MIN_BATCH_SIZE, ceiling)
        self.size = ceiling

    def took(self, seconds: float) -> None:
        """A batch of `self.size` rows committed after `seconds`."""
        if self.target is None:
            return
        if seconds > self.target:
            scaled = int(self.size * self.target / seconds * self.MARGIN)
            self.size = max(self.floor, min(self.size - 1, scaled))
        elif seconds < self.target / 2:
            self.size = min(self.ceiling, max(self.size + 1, int(self.size * self.GROWTH)))

    def conflict(self) -> None:
        """The batch lost a lock wait or a deadlock: fewer rows, fewer writers to meet."""
        if self.target is not None:
            self.size = max(self.floor, self.size // 2)


def session_limits(connection: Connection, lock_timeout: float, statement_timeout: float) -> None:
    """Limits set once for the backfill's own session (MariaDB/MySQL and SQLite)."""
    dialect = connection.dialect.name
    if dialect in {"mysql", "mariadb"}:
        seconds = max(1, round(lock_timeout))
        connection.exec_driver_sql(f"SET SESSION innodb_lock_wait_timeout = {seconds}")
        connection.exec_driver_sql(f"SET SESSION lock_wait_timeout = {seconds}")
        if getattr(connection.dialect, "is_mariadb", False):
            connection.exec_driver_sql(
                f"SET SESSION max_statement_time = {float(statement_timeout):g}"
            )
        connection.commit()
    elif dialect == "sqlite":
        milliseconds = max(1, round(lock_timeout * 1000))
        connection.exec_driver_sql(f"PRAGMA busy_timeout = {milliseconds}")
        connection.commit()


def set_transaction_limits(
    connection: Connection, lock_timeout: float, statement_timeout: float
) -> None:
    """PostgreSQL: SET LOCAL, for this batch's transaction only."""
    if connection.dialect.name != "postgresql":
        return
    for setting, seconds in (
        ("lock_timeout", lock_timeout),
        ("statement_timeout", statement_timeout),
    ):
        milliseconds = max(1, round(seconds * 1000))  # 0 would switch the limit off
        connection.exec_driver_sql(
            "SELECT set_config(%(name)s, %(value)s, true)",
            {"name": setting, "value": f"{milliseconds}ms"},
        )


# PostgreSQL: lock_not_available (lock_timeout), deadlock_detected, serialization_failure,
# query_canceled (statement_timeout; a stop request raises KeyboardInterrupt instead).
_PG_RETRY = {"55P03", "40P01", "40001", "57014"}
# MariaDB/MySQL: lock wait timeout, deadlock, max_statement_time exceeded, max_execution_time.
_MYSQL_RETRY = {1205, 1213, 1969, 3024}


def is_lock_conflict(error: BaseException) -> bool:
    """Whether a batch failed only because others held what it needed: worth another try."""
    original = getattr(error, "orig", None)
    if original is None:
        return False
    if getattr(original, "pgcode", None) in _PG_RETRY:
        return True
    arguments = getattr(original, "args", ())
    if arguments and arguments[0] in _MYSQL_RETRY:
        return True
    message = str(original).lower()
    return "database is locked" in message or "database table is locked" in message
