"""Migrations on an application's own async driver (`migrations.driver: keep`).

Alembic is synchronous; an async application runs it the way Alembic's cookbook shows
("Using Asyncio with Alembic", "Programmatic API use (connection sharing) With Asyncio"): an
event loop, an `AsyncConnection`, and `await connection.run_sync(fn)`, where `fn` gets a plain
synchronous `Connection` whose statements go through the async driver (SQLAlchemy's greenlet
bridge). The tasks do exactly that around the migration itself, and hand `fn`'s connection to
env.py in `config.attributes["connection"]`; the lock, the audit row and the tasks' own reads
stay on the sync driver, against the same database.

Some applications' env.py runs only where their own code calls Alembic: in a worker thread of an
event loop, calling back into that loop (`anyio.from_thread.run(...)`, Prefect's
`run_async_from_worker_thread`), so plain `alembic upgrade` cannot run it either. With AnyIO
installed, `in_worker_thread` gives such an env.py what its application gives it: the event loop
waits in the main thread while env.py runs in one of its worker threads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from tasks.core.errors import DatabaseError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from tasks.core.environments import Environment
    from tasks.core.settings import Settings

T = TypeVar("T")


def run_on_async_driver(
    environment: Environment,
    settings: Settings,
    work: Callable[[Connection], T],
) -> T:
    """`work(connection)` inside an event loop, on a connection of the environment's own async
    driver, with the environment's session settings (timeouts, schema) applied first."""
    import asyncio

    from tasks.core.session import apply_session_timeouts, enter_schema

    assert environment.migration_url is not None
    engine = _async_engine(environment, settings.connect_timeout)

    def prepared(connection: Connection) -> T:
        apply_session_timeouts(connection, settings, environment)
        if environment.schema:
            enter_schema(connection, environment.schema)
        return work(connection)

    async def main() -> T:
        try:
            try:
                connection = await engine.connect()
            except Exception as error:
                from tasks.core.engines import describe_database_error

                raise DatabaseError(
                    f"cannot connect to {environment.name} database {environment.masked_url} "
                    f"with {environment.migration_url.drivername}: "  # type: ignore[union-attr]
                    f"{describe_database_error(error)}"
                ) from None
            try:
                return await connection.run_sync(prepared)
            finally:
                await connection.close()
        finally:
            await engine.dispose()

    return in_worker_thread(lambda: asyncio.run(main()))


def in_worker_thread(work: Callable[[], T]) -> T:
    """`work()` in a worker thread of an AnyIO event loop, so an env.py may call back into that
    loop the way AnyIO applications do (`anyio.from_thread.run`); directly when an event loop
    already runs in this thread (that is the worker's) or AnyIO is not installed."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return work()
    try:
        import anyio
        import anyio.to_thread
    except ImportError:
        return work()

    async def main() -> T:
        return await anyio.to_thread.run_sync(work)

    return anyio.run(main)


def _async_engine(environment: Environment, connect_timeout: float) -> Any:
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    from tasks.core.engines import make_sqlite_transactional

    url = environment.migration_url
    assert url is not None
    driver = url.get_driver_name()
    connect_args: dict[str, Any] = {}
    if driver == "asyncpg":
        connect_args = {
            "timeout": connect_timeout,
            "server_settings": {"application_name": "migration-tasks"},
        }
    elif driver == "aiosqlite":
        connect_args = {"timeout": connect_timeout}
    elif driver in {"aiomysql", "asyncmy"}:
        connect_args = {"connect_timeout": max(1, round(connect_timeout))}
    engine = create_async_engine(url, poolclass=NullPool, connect_args=connect_args)
    if url.get_backend_name() == "sqlite":
        make_sqlite_transactional(engine.sync_engine)  # SQLAlchemy's recipe, aiosqlite too
    return engine
