"""Stopping a run on request: SIGTERM like Ctrl-C, and a long statement cancelled on the server.

A CI cancel, `docker stop` and Kubernetes send SIGTERM, whose default action kills the process
at once: no rollback of the revision in progress, no audit row, no finished log line. While a
run holds `stop_requests()`, SIGTERM raises `Terminated` (a KeyboardInterrupt, so every
`with`/`finally` that rolls back on Ctrl-C rolls back on it too) and the run ends through the same
path as an interrupted one.

Neither signal could interrupt a PostgreSQL statement: psycopg2 waits for the server inside C,
where Python's signal handlers do not run, so Ctrl-C during a 20-minute ALTER waited up to the
statement_timeout. Inside `stop_requests()` psycopg2 waits through a Python callback instead;
when Ctrl-C or SIGTERM arrives there, the migration connection's statement is cancelled on the
server (libpq's cancel request, what `pg_cancel_backend` does), the server's answer is read so
the connection stays usable for the rollback, and the interrupt is raised.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

EXIT_TERMINATED = 128 + signal.SIGTERM  # 143, what shells report for a SIGTERM'd command
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130
# Signals whose default action kills the task outright: a CI cancel, `docker stop`, Kubernetes
# (SIGTERM), and a closed terminal or dropped SSH session (SIGHUP).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: stop like Ctrl-C, but say which and exit 128 + its number."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"terminated ({signal.Signals(signum).name})")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextmanager
def stop_requests() -> Iterator[None]:
    """Within the block, SIGTERM or SIGHUP raises Terminated once and PostgreSQL statements are
    cancellable; outside the main thread (no signal handlers there) only the latter."""
    with _cancellable_postgresql(), _cancellable_mysql(), _terminate_raises():
        yield


@contextmanager
def stops_first() -> Iterator[None]:
    """An error raised while a stop request was unwinding is not what stopped the run.

    A SIGTERM that lands inside SQLAlchemy invalidates the connection mid-transaction; the
    rollback on the way out then raises "Can't reconnect until invalid transaction is rolled
    back", and that error, not the stop, reached the top: exit 1 and a database error where
    the operator asked for exit 143. The stop request behind such an error is raised instead.
    """
    try:
        yield
    except Exception as error:
        stop = interrupt_behind(error)
        if stop is None:
            raise
        raise stop from None


def interrupt_behind(error: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or stop signal an exception was raised while handling, if any."""
    pending: list[BaseException] = [error]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, KeyboardInterrupt):
            return current
        pending.extend(link for link in (current.__cause__, current.__context__) if link)
    return None


@contextmanager
def stop_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise Terminated in the main thread, nothing else: for a command whose
    statements run in worker threads (a fleet), where the statement-cancelling hooks, which
    swap process-wide driver callbacks, would race between threads."""
    with _terminate_raises():
        yield


@contextmanager
def _terminate_raises() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False

    def on_stop_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal raised
        if raised:  # already stopping: let the rollback, audit row and log line finish
            return
        raised = True
        _kill_busy_mysql_queries()
        raise Terminated(signum)

    def on_interrupt(_signum: int, _frame: FrameType | None) -> None:
        # Only the first Ctrl-C stops the run: an impatient operator pressing it again must not
        # interrupt the rollback, the audit row or the log line (the statement was cancelled on
        # the server already; SIGKILL remains for a run that is truly stuck).
        nonlocal raised
        if raised:
            return
        raised = True
        _kill_busy_mysql_queries()
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, on_stop_signal) for signum in STOP_SIGNALS}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        # After a stop the process is on its way out with its records written: further signals
        # (Ctrl-C pressed again) are ignored rather than let kill it between here and the exit.
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_IGN if raised else handler)


@contextmanager
def _cancellable_postgresql() -> Iterator[None]:
    try:
        from psycopg2 import extensions
    except ImportError:  # no PostgreSQL driver, no PostgreSQL statement to cancel
        yield
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    previous = extensions.get_wait_callback()
    extensions.set_wait_callback(_wait_cancelling)
    event.listen(Engine, "do_connect", _connect_blocking)
    try:
        yield
    finally:
        event.remove(Engine, "do_connect", _connect_blocking)
        extensions.set_wait_callback(previous)


def _connect_blocking(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
    """Connect psycopg2 the ordinary, blocking way, without the wait callback.

    With a wait callback psycopg2 connects asynchronously, where libpq ignores connect_timeout
    (an unreachable host would hang) and connection errors lose their host and port. Statements
    still go through the callback: psycopg2 consults it at every execute.
    """
    if getattr(dialect, "driver", None) != "psycopg2":
        return None  # SQLAlchemy connects as usual
    from psycopg2 import extensions

    # The callback is process-wide: a fleet's threads connecting at once would otherwise
    # restore each other's None, or one would connect asynchronously while another has
    # removed the callback it needs ("wait callback not available", a crash inside psycopg2).
    with _CALLBACK_SWAP:
        callback = extensions.get_wait_callback()
        extensions.set_wait_callback(None)
        try:
            return dialect.loaded_dbapi.connect(*cargs, **cparams)
        finally:
            extensions.set_wait_callback(callback)


_CALLBACK_SWAP = threading.Lock()


def _wait_cancelling(connection: Any) -> None:
    """psycopg2's wait callback: `wait_select`, except that an interrupt cancels the statement
    and, once the server has answered, is raised again instead of being swallowed."""
    import select

    from psycopg2 import Error, extensions

    interrupted: KeyboardInterrupt | None = None
    while True:
        try:
            state = connection.poll()
            if state == extensions.POLL_OK:
                break
            if state == extensions.POLL_READ:
                select.select([connection.fileno()], [], [])
            elif state == extensions.POLL_WRITE:
                select.select([], [connection.fileno()], [])
            else:
                raise connection.OperationalError(f"bad state from poll: {state}")
        except KeyboardInterrupt as interrupt:
            if interrupted is not None:
                raise  # a second Ctrl-C while cancelling: stop waiting for the server
            interrupted = interrupt
            try:
                connection.cancel()
            except Error:
                raise interrupt from None  # nothing to cancel (still connecting)
        except Error:
            if interrupted is not None:
                raise interrupted from None  # the server's "canceling statement" answer
            raise
    if interrupted is not None:
        raise interrupted


# PyMySQL connections of this process with a statement on the server right now.
_BUSY_MYSQL: set[Any] = set()


@contextmanager
def _cancellable_mysql() -> Iterator[None]:
    """Track which PyMySQL connections are executing, so a stop request can KILL QUERY them.

    PyMySQL reads in Python, so Ctrl-C does interrupt it, but only on our side: the server
    would run the statement (a long ALTER TABLE, which then commits) to its end after the task
    gave up on it. MariaDB's equivalent of a cancel is `KILL QUERY <connection id>`, sent on a
    separate connection.
    """
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    listeners = (
        ("before_cursor_execute", _mysql_busy),
        ("after_cursor_execute", _mysql_idle),
        ("handle_error", _mysql_failed),
    )
    for name, listener in listeners:
        event.listen(Engine, name, listener)
    try:
        yield
    finally:
        for name, listener in listeners:
            event.remove(Engine, name, listener)
        _BUSY_MYSQL.clear()


def _mysql_busy(connection: Any, _cursor: Any, *_args: Any) -> None:
    if connection.dialect.driver == "pymysql":
        _BUSY_MYSQL.add(connection.connection.dbapi_connection)


def _mysql_idle(connection: Any, _cursor: Any, *_args: Any) -> None:
    if connection.dialect.driver == "pymysql":
        _BUSY_MYSQL.discard(connection.connection.dbapi_connection)


def _mysql_failed(context: Any) -> None:
    connection = context.connection
    if connection is not None and connection.dialect.driver == "pymysql":
        _BUSY_MYSQL.discard(connection.connection.dbapi_connection)


def _kill_busy_mysql_queries() -> None:
    """KILL QUERY every statement our PyMySQL connections are running (best effort: the stop
    goes ahead whatever happens here)."""
    for busy in list(_BUSY_MYSQL):
        _BUSY_MYSQL.discard(busy)
        try:
            import pymysql

            killer = pymysql.connect(
                host=busy.host,
                port=busy.port,
                user=busy.user.decode() if isinstance(busy.user, bytes) else busy.user,
                password=busy.password,
                unix_socket=busy.unix_socket,
                connect_timeout=5,
            )
            try:
                with killer.cursor() as cursor:
                    cursor.execute(f"KILL QUERY {int(busy.thread_id())}")
            finally:
                killer.close()
        except Exception:  # noqa: S110 - the server ends the statement later, at worst
            pass
