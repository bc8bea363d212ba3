"""Which database a live connection reaches, asked of the server itself.

An adopted env.py may build its own engine from the application's settings instead of using the
task's connection; it then migrates whatever those settings name. Comparing URLs cannot settle
whether two connections reach one database (`localhost` and `127.0.0.1`, a relative SQLite path,
a unix socket), so each connection is asked: PostgreSQL for its database, port and the
postmaster's start time (two servers started in the same microsecond on one port do not
happen), MySQL/MariaDB for its database, host name, port and data directory, SQLite for the
real path of its main file.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

_QUERIES = {
    "postgresql": (
        "SELECT current_database(), current_setting('port'), pg_postmaster_start_time()::text"
    ),
    "mysql": "SELECT DATABASE(), @@hostname, @@port, @@datadir",
    "mariadb": "SELECT DATABASE(), @@hostname, @@port, @@datadir",
}


def identity(connection: Connection) -> tuple[Any, ...]:
    """What names the database behind `connection`, read without changing anything.

    The read leaves no transaction open that was not open before: Alembic decides whether it
    owns the transactions of a run from whether the connection is already in one.
    """
    dialect = connection.dialect.name
    was_in_transaction = connection.in_transaction()
    try:
        if dialect == "sqlite":
            rows = connection.exec_driver_sql("PRAGMA database_list").fetchall()
            main = next((row[2] for row in rows if row[1] == "main"), "")
            if not main:  # an in-memory database is only ever itself
                return ("sqlite", "memory", id(connection.connection.dbapi_connection))
            return ("sqlite", os.path.realpath(main))
        query = _QUERIES.get(dialect)
        if query is None:
            return (dialect, str(connection.engine.url.render_as_string(hide_password=True)))
        row = connection.exec_driver_sql(query).fetchone()
        return (dialect, *(str(value) for value in row or ()))
    finally:
        if not was_in_transaction and connection.in_transaction():
            connection.rollback()


def same_database(first: Connection, second: Connection) -> bool:
    """Whether two connections reach one database (the same connection trivially does)."""
    if first is second or _dbapi(first) is _dbapi(second):
        return True
    if first.dialect.name != second.dialect.name:
        return False
    return identity(first) == identity(second)


def _dbapi(connection: Connection) -> Any:
    try:
        return connection.connection.dbapi_connection
    except Exception:
        return object()
