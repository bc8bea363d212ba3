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

A held lock can still be lost: an `idle_session_timeout` or `wait_timeout`, a `KILL`, a proxy or
a dead network path ends the lock's session, and the server then gives the lock to the next
runner. The lock's connection therefore turns idle timeouts off for its session and uses TCP
keepalives, and `verify_lock()` (called before each revision starts and before it commits)
raises `LockLost` when the lock is no longer ours.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from tasks.core.errors import DatabaseError, LockLost, LockTimeout

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from tasks.core.environments import Environment

LOCK_NAME = "migration-tasks"
POLL_SECONDS = 0.25


# Seconds of TCP silence before the lock connection's keepalive probes start, between probes,
# and probes lost before the kernel declares the server gone.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 30, 10, 3
# MariaDB's largest wait_timeout on Linux (one year): the session never times out while idle.
MYSQL_MAX_WAIT_TIMEOUT = 31536000


class _Lock(Protocol):
    def try_acquire(self) -> bool: ...
    def holder(self) -> str: ...
    def still_held(self) -> bool: ...
    def release(self) -> None: ...


class HeldLock:
    """A migration lock this process holds; `verify` says whether it still does."""

    def __init__(self, lock: _Lock) -> None:
        self._lock = lock
        self.lost: str | None = None

    def verify(self, moment: str) -> None:
        """Raise LockLost unless the lock is still ours. Fails closed: an error while asking
        (the connection is gone) counts as a lost lock, and a lost lock stays lost."""
        if self.lost is None:
            try:
                if not self._lock.still_held():
                    self.lost = "the server no longer shows it held by this run's session"
            except Exception as error:  # a dead connection: the server released the lock
                from tasks.core.engines import describe_database_error

                self.lost = f"its connection failed: {describe_database_error(error)}"
        if self.lost is not None:
            raise LockLost(
                f"migration lock lost {moment} ({self.lost}); another runner may hold it now: "
                "the run stopped"
            )

    @property
    def connection(self) -> Connection | None:
        """The lock's own autocommit connection (None for a SQLite file lock): what the run
        writes its revision-progress bookkeeping through, so a write succeeds only while the
        lock's session lives."""
        return getattr(self._lock, "connection", None)


# Locks held by this thread, innermost last; `verify_lock` checks them all. Per thread: a fleet
# migrates several databases at once, each run holding its own lock in its own thread.
_THREAD = threading.local()


def _held() -> list[HeldLock]:
    if not hasattr(_THREAD, "held"):
        _THREAD.held = []
    return _THREAD.held


def verify_lock(moment: str) -> None:
    """Raise LockLost if a migration lock this thread took has been lost since.

    `moment` says when we looked ("before revision X commits"). Without a held lock (a caller
    that never took one) there is nothing to verify.
    """
    for held in list(_held()):
        held.verify(moment)


def held_lock_connection() -> Connection | None:
    """The connection of the innermost migration lock this thread holds, if it has one."""
    held = _held()
    return held[-1].connection if held else None


@contextmanager
def migration_lock(
    environment: Environment,
    *,
    label: str,
    timeout: float,
    connect_timeout: float = 5,
    on_wait: Callable[[str], None] | None = None,
    on_tick: Callable[[float], None] | None = None,
) -> Iterator[HeldLock]:
    """Hold the environment's migration lock for the duration of the block.

    `label` says who we are (operator, host, task, pid); waiting runners print it once through
    `on_wait`, and `on_tick` hears the seconds waited so far at every poll (a terminal's live
    line).
    """
    with _lock_for(environment, label[:63], connect_timeout) as lock:
        _wait_for(lock, timeout, on_wait, on_tick)
        held = HeldLock(lock)
        _held().append(held)
        try:
            yield held
        finally:
            _held().remove(held)
            with contextlib.suppress(Exception):  # a lost session has released it already
                lock.release()


@contextmanager
def _lock_for(environment: Environment, label: str, connect_timeout: float) -> Iterator[_Lock]:
    backend = environment.dialect
    if backend == "sqlite":
        with _FileLock.open(environment, label) as lock:
            yield lock
        return
    from tasks.core.engines import connect

    if backend == "postgresql":
        environment = _with_keepalives(environment)
    with connect(environment, connect_timeout, application_name=label) as connection:
        connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        if backend == "postgresql":
            _keep_postgresql_session(connection)
            # Schema-per-tenant targets share a database but not a lock.
            schema = f":{environment.schema}" if environment.schema else ""
            yield _AdvisoryLock(connection, _advisory_key(LOCK_NAME + schema))
        elif backend in {"mysql", "mariadb"}:
            _keep_mysql_session(connection)
            yield _NamedLock(connection, f"{LOCK_NAME}:{environment.url.database}"[:64])
        else:
            raise DatabaseError(f"no migration lock is implemented for {backend}")


def _with_keepalives(environment: Environment) -> Environment:
    """The environment with libpq's TCP keepalives on: a silently dead path (a NAT or proxy that
    dropped the connection) is noticed in about a minute instead of the kernel's two hours.
    Settings in the URL's own query win."""
    wanted = {
        "keepalives": "1",
        "keepalives_idle": str(KEEPALIVE_IDLE),
        "keepalives_interval": str(KEEPALIVE_INTERVAL),
        "keepalives_count": str(KEEPALIVE_COUNT),
    }
    query = {**wanted, **dict(environment.url.query)}
    return dataclasses.replace(environment, url=environment.url.update_query_dict(query))


def _keep_postgresql_session(connection: Connection) -> None:
    """Nothing on the server may end the lock's session for being idle: holding the lock is
    all it does. A role or database setting would otherwise hand the lock to the next runner."""
    settings = ["idle_in_transaction_session_timeout"]
    if (connection.dialect.server_version_info or (0,)) >= (14,):
        settings.append("idle_session_timeout")
    for name in settings:
        connection.exec_driver_sql("SELECT set_config(%(name)s, '0', false)", {"name": name})


def _keep_mysql_session(connection: Connection) -> None:
    """The longest wait_timeout the server accepts, and TCP keepalives on the socket."""
    connection.exec_driver_sql(
        f"SET SESSION wait_timeout = {MYSQL_MAX_WAIT_TIMEOUT}, "
        f"interactive_timeout = {MYSQL_MAX_WAIT_TIMEOUT}"
    )
    raw = connection.connection.dbapi_connection
    sock = getattr(raw, "_sock", None)  # PyMySQL's socket; other drivers keep theirs hidden
    if isinstance(sock, socket.socket):
        _socket_keepalives(sock)


def _socket_keepalives(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
    ):
        if hasattr(socket, option) and sock.family in {socket.AF_INET, socket.AF_INET6}:
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


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

    def still_held(self) -> bool:
        """Whether this connection's own session holds the lock (pg_locks, by backend pid)."""
        row = self.connection.exec_driver_sql(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND pid = pg_backend_pid() AND classid = %(high)s AND objid = %(low)s "
            "AND objsubid = 1",
            {"high": self.KEY >> 32, "low": self.KEY & 0xFFFF_FFFF},
        ).scalar()
        return bool(row)

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

    def still_held(self) -> bool:
        """Whether the lock's owner is this very connection (a reconnect is not the owner)."""
        query = "SELECT IS_USED_LOCK(%(name)s) = CONNECTION_ID()"
        return self.connection.exec_driver_sql(query, {"name": self.name}).scalar() == 1

    def release(self) -> None:
        self.connection.exec_driver_sql("SELECT RELEASE_LOCK(%(name)s)", {"name": self.name})


class _FileLock:
    """An exclusive flock on `<database>.migration-lock`, and one on the database file itself.

    The lock file carries the holder's label; the second flock is on the file's inode, so two
    runners that reach one database through different names (a hard link in another folder,
    which resolves to another lock file) still exclude each other. SQLite's own locks are POSIX
    record locks, which flock does not touch.
    """

    def __init__(self, handle: IO[str], label: str, path: Path, data: IO[bytes] | None) -> None:
        self.handle = handle
        self.label = label
        self.path = path
        self.data = data

    @classmethod
    @contextmanager
    def open(cls, environment: Environment, label: str) -> Iterator[_FileLock]:
        path = lock_file_path(environment.url.database or ":memory:")
        try:
            handle = path.open("a+", encoding="utf-8")
        except OSError as error:
            raise DatabaseError(f"cannot open the lock file {path}: {error.strerror}") from None
        database = path.with_name(path.name.removesuffix(".migration-lock"))
        data = None
        if path != Path(os.devnull):
            with contextlib.suppress(OSError):  # not created yet: the lock file is enough
                data = database.open("rb")
        with handle, data if data is not None else contextlib.nullcontext():
            yield cls(handle, label, path, data)

    def try_acquire(self) -> bool:
        import fcntl

        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if self.data is not None:
            try:
                fcntl.flock(self.data, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # held through another name of the same file
                fcntl.flock(self.handle, fcntl.LOCK_UN)
                return False
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"'{self.label}'")
        self.handle.flush()
        return True

    def holder(self) -> str:
        self.handle.seek(0)
        return self.handle.read().strip() or "another process (maybe through another name)"

    def still_held(self) -> bool:
        """A flock lasts as long as our descriptor, but only locks the file it was taken on: if
        the lock file was deleted or replaced, the next runner locks a new file beside us."""
        if self.path == Path(os.devnull):
            return True
        try:
            current = self.path.stat()
        except OSError:
            return False
        ours = os.fstat(self.handle.fileno())
        return (current.st_dev, current.st_ino) == (ours.st_dev, ours.st_ino)

    def release(self) -> None:
        import fcntl

        self.handle.truncate(0)
        self.handle.flush()
        if self.data is not None:
            fcntl.flock(self.data, fcntl.LOCK_UN)
        fcntl.flock(self.handle, fcntl.LOCK_UN)


def lock_file_path(database: str) -> Path:
    """`<database>.migration-lock` beside the database's real file: every path that reaches the
    same file (a symlink, `..`, a relative path) must find the same lock."""
    if database.startswith("file:"):  # a URI filename: its path, without ?mode=... and such
        from urllib.parse import unquote, urlsplit

        parts = urlsplit(database)
        if "mode=memory" in parts.query:
            return Path(os.devnull)
        database = unquote(parts.path)
    if not database or database == ":memory:":
        return Path(os.devnull)
    real = Path(database).expanduser().resolve()
    return real.with_name(real.name + ".migration-lock")
