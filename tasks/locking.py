"""One migrator at a time: a database-level lock held for a task's whole run.

Alembic does not lock against concurrent runs (alembic #633). Every task that changes a database
takes this lock first and keeps it until it ends:

- PostgreSQL: a session advisory lock on a separate autocommit connection, so revisions keep
  the freedom to use `autocommit_block()` (CREATE INDEX CONCURRENTLY) on their own connection.
  The server releases it when the holder's session ends, even after SIGKILL.
- MySQL/MariaDB: `GET_LOCK()` on a separate connection, released the same way.
- SQLite: an exclusive `flock` on `<database>.migration-lock`. A SQLite write transaction held
  for the whole run would block the migration's own connection; the kernel drops the flock when
  the holder dies.

A runner that finds the lock taken says who holds it and waits up to `timeout` seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from tasks.errors import DatabaseError, LockTimeout

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from tasks.environments import Environment

LOCK_NAME = "migration-tasks"
POLL_SECONDS = 0.25


class _Lock(Protocol):
    def try_acquire(self) -> bool: ...
    def holder(self) -> str: ...
    def release(self) -> None: ...


@contextmanager
def migration_lock(
    environment: Environment,
    *,
    label: str,
    timeout: float,
    connect_timeout: float = 5,
    on_wait: Callable[[str], None] | None = None,
    on_tick: Callable[[float], None] | None = None,
) -> Iterator[None]:
    """Hold the environment's migration lock for the duration of the block.

    `label` says who we are (operator, host, task, pid); waiting runners print it once through
    `on_wait`, and `on_tick` hears the seconds waited so far at every poll (a terminal's live
    line).
    """
    with _lock_for(environment, label[:63], connect_timeout) as lock:
        _wait_for(lock, timeout, on_wait, on_tick)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):  # a lost session has released it already
                lock.release()


@contextmanager
def _lock_for(environment: Environment, label: str, connect_timeout: float) -> Iterator[_Lock]:
    backend = environment.dialect
    if backend == "sqlite":
        with _FileLock.open(environment, label) as lock:
            yield lock
        return
    from tasks.engines import connect

    with connect(environment, connect_timeout, application_name=label) as connection:
        connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        if backend == "postgresql":
            # Schema-per-tenant targets share a database but not a lock.
            schema = f":{environment.schema}" if environment.schema else ""
            yield _AdvisoryLock(connection, _advisory_key(LOCK_NAME + schema))
        elif backend in {"mysql", "mariadb"}:
            yield _NamedLock(connection, f"{LOCK_NAME}:{environment.url.database}"[:64])
        else:
            raise DatabaseError(f"no migration lock is implemented for {backend}")


def _wait_for(
    lock: _Lock,
    timeout: float,
    on_wait: Callable[[str], None] | None,
    on_tick: Callable[[float], None] | None = None,
) -> None:
    started = time.monotonic()
    deadline = started + timeout
    announced = False
    while not lock.try_acquire():
        holder = lock.holder()
        if not announced and on_wait is not None:
            on_wait(f"migration lock held by {holder}; waiting up to {timeout:g} s")
            announced = True
        if time.monotonic() >= deadline:
            raise LockTimeout(f"migration lock still held by {holder} after {timeout:g} s")
        if on_tick is not None:
            on_tick(time.monotonic() - started)
        time.sleep(POLL_SECONDS)
    if announced and on_wait is not None:
        on_wait(f"migration lock acquired after {time.monotonic() - started:.1f} s")


def _advisory_key(name: str) -> int:
    """A stable, positive 63-bit key for pg_advisory_lock derived from the lock's name."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


class _AdvisoryLock:
    KEY = _advisory_key(LOCK_NAME)
    HOLDER_QUERY = (
        "SELECT a.application_name, a.client_addr::text, a.pid, a.backend_start "
        "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND l.classid = %(high)s AND l.objid = %(low)s AND l.objsubid = 1 LIMIT 1"
    )

    def __init__(self, connection: Connection, key: int = KEY) -> None:
        self.connection = connection
        self.KEY = key

    def try_acquire(self) -> bool:
        query = "SELECT pg_try_advisory_lock(%(key)s)"
        return bool(self.connection.exec_driver_sql(query, {"key": self.KEY}).scalar())

    def holder(self) -> str:
        parts = {"high": self.KEY >> 32, "low": self.KEY & 0xFFFF_FFFF}
        row = self.connection.exec_driver_sql(self.HOLDER_QUERY, parts).first()
        if row is None:
            return "another session"
        name, address, pid, since = row
        where = address or "local socket"
        return f"'{name or 'unknown'}' (server pid {pid}, {where}, since {since:%Y-%m-%d %H:%M:%S})"

    def release(self) -> None:
        self.connection.exec_driver_sql("SELECT pg_advisory_unlock(%(key)s)", {"key": self.KEY})


class _NamedLock:
    def __init__(self, connection: Connection, name: str) -> None:
        self.connection = connection
        self.name = name

    def try_acquire(self) -> bool:
        query = "SELECT GET_LOCK(%(name)s, 0)"
        return self.connection.exec_driver_sql(query, {"name": self.name}).scalar() == 1

    def holder(self) -> str:
        row = self.connection.exec_driver_sql(
            "SELECT ID, USER, HOST FROM information_schema.PROCESSLIST "
            "WHERE ID = IS_USED_LOCK(%(name)s)",
            {"name": self.name},
        ).first()
        return f"connection {row[0]} ({row[1]}@{row[2]})" if row else "another session"

    def release(self) -> None:
        self.connection.exec_driver_sql("SELECT RELEASE_LOCK(%(name)s)", {"name": self.name})


class _FileLock:
    def __init__(self, handle: IO[str], label: str) -> None:
        self.handle = handle
        self.label = label

    @classmethod
    @contextmanager
    def open(cls, environment: Environment, label: str) -> Iterator[_FileLock]:
        database = environment.url.database or ":memory:"
        path = Path(f"{database}.migration-lock")
        if database == ":memory:":
            path = Path(os.devnull)
        try:
            handle = path.open("a+", encoding="utf-8")
        except OSError as error:
            raise DatabaseError(f"cannot open the lock file {path}: {error.strerror}") from None
        with handle:
            yield cls(handle, label)

    def try_acquire(self) -> bool:
        import fcntl

        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"'{self.label}'")
        self.handle.flush()
        return True

    def holder(self) -> str:
        self.handle.seek(0)
        return self.handle.read().strip() or "another process"

    def release(self) -> None:
        import fcntl

        self.handle.truncate(0)
        self.handle.flush()
        fcntl.flock(self.handle, fcntl.LOCK_UN)
