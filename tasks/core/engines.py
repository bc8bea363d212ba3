"""Engines and connections for migration work, and turning driver errors into masked one-liners.

One engine per task run, no pool (a task is one short session), a connect timeout so an
unreachable host fails in seconds, and SQLite put into real transactional mode so DDL can be
rolled back (pysqlite otherwise commits before every DDL statement).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from tasks.core.errors import DatabaseError
from tasks.core.redaction import redact

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Connection, Engine

    from tasks.core.environments import Environment


def create_engine(
    url: URL, connect_timeout: float = 5, *, application_name: str = "migration-tasks"
) -> Engine:
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    backend = url.get_backend_name()
    connect_args: dict[str, object] = {}
    if backend == "postgresql":
        connect_args["connect_timeout"] = max(1, round(connect_timeout))
        connect_args["application_name"] = application_name
    elif backend in {"mysql", "mariadb"}:
        connect_args["connect_timeout"] = max(1, round(connect_timeout))
    elif backend == "sqlite":
        connect_args["timeout"] = connect_timeout
    engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=connect_args)
    if backend == "sqlite":
        make_sqlite_transactional(engine)
    return engine


def make_sqlite_transactional(engine: Engine) -> None:
    """SQLAlchemy's documented recipe: let SQLAlchemy, not pysqlite, emit BEGIN."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _disable_pysqlite_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN")

    # An env.py that opens its own connection from this engine (`connection.engine.connect()`,
    # mlflow's) must not get a second BEGIN listener from the recipe below.
    engine._tasks_transactional = True  # type: ignore[attr-defined]


def make_sqlite_connection_transactional(connection: Connection) -> None:
    """The same recipe for a connection someone else opened (an adopted env.py's own engine),
    before it begins: its DDL then rolls back with the revision that failed."""
    from sqlalchemy import event

    if connection.dialect.name != "sqlite" or connection.in_transaction():
        return
    engine = connection.engine
    if getattr(engine, "_tasks_transactional", False):
        return
    connection.connection.dbapi_connection.isolation_level = None  # type: ignore[union-attr]

    @event.listens_for(engine, "begin")
    def _begin(begun: Connection) -> None:
        begun.exec_driver_sql("BEGIN")

    engine._tasks_transactional = True  # type: ignore[attr-defined]


@contextmanager
def connect(
    environment: Environment,
    connect_timeout: float = 5,
    *,
    application_name: str = "migration-tasks",
) -> Iterator[Connection]:
    """A connection to the environment's database; failures become one masked line."""
    engine = create_engine(environment.url, connect_timeout, application_name=application_name)
    try:
        try:
            connection = engine.connect()
        except Exception as error:  # driver errors vary by dialect; all mean "cannot connect"
            raise DatabaseError(
                f"cannot connect to {environment.name} database {environment.masked_url}: "
                f"{describe_database_error(error)}"
            ) from None
        with connection:
            yield connection
    finally:
        engine.dispose()


def describe_database_error(error: BaseException) -> str:
    """The first meaningful line of a driver error, with secrets masked."""
    from sqlalchemy.exc import DBAPIError, StatementError

    original = error.orig if isinstance(error, DBAPIError | StatementError) else error
    text = str(original) or type(original).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return redact(lines[0] if lines else type(original).__name__)
