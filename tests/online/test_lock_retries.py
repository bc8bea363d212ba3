"""`op.lock_retries()` on real PostgreSQL: a DDL statement that cannot get its lock gives up
after its short lock_timeout and is sent again until it can, the session's own lock_timeout
is never changed, and it refuses to run where a retry would be unsafe (in a transaction).

No timing is asserted: a blocker holds a conflicting lock until it has seen the DDL wait twice
(two different statement starts of the migration session: a retry), then lets go.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy
from alembic.migration import MigrationContext
from alembic.operations import Operations

import tasks.online.lock_retries  # noqa: F401  (registers op.lock_retries)
from tasks.core.errors import UsageError

pytestmark = pytest.mark.postgres

MIGRATION_APP = "lock-retries-test"


@pytest.fixture
def engine(pg_url: str) -> Iterator[sqlalchemy.Engine]:
    engine = sqlalchemy.create_engine(pg_url, connect_args={"application_name": MIGRATION_APP})
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (id integer PRIMARY KEY)")
    yield engine
    engine.dispose()


@contextmanager
def migration(engine: sqlalchemy.Engine) -> Iterator[Operations]:
    """Alembic's `op` on a connection whose session lock_timeout is 5s (as the tasks set it)."""
    with engine.connect() as connection:
        connection.exec_driver_sql("SET lock_timeout = '5s'")
        connection.commit()
        context = MigrationContext.configure(connection)
        with context.begin_transaction():
            yield Operations(context)


def lock_timeout(engine: sqlalchemy.Engine, operations: Operations) -> str:
    return str(operations.get_bind().exec_driver_sql("SHOW lock_timeout").scalar())


class Blocker(threading.Thread):
    """Holds ACCESS SHARE on `t` (what any reader holds) until the migration session has been
    seen waiting for a lock in two different statements (or `release` is set)."""

    def __init__(self, url: str, *, until_released: bool = False) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.until_released = until_released  # ignore the waits seen: hold until `release`
        self.holding = threading.Event()
        self.release = threading.Event()
        self.waits_seen: set[str] = set()

    def run(self) -> None:
        engine = sqlalchemy.create_engine(self.url)
        try:
            with engine.connect() as holder, engine.connect() as watcher:
                holder.exec_driver_sql("BEGIN; LOCK TABLE t IN ACCESS SHARE MODE")
                self.holding.set()
                deadline = time.monotonic() + 60  # a safety net, not an assertion
                while not self.release.is_set():
                    if len(self.waits_seen) >= 2 and not self.until_released:
                        break
                    if time.monotonic() > deadline:
                        break
                    started = watcher.execute(
                        sqlalchemy.text(
                            "SELECT query_start::text FROM pg_stat_activity WHERE "
                            "application_name = :app AND wait_event_type = 'Lock'"
                        ),
                        {"app": MIGRATION_APP},
                    ).scalar()
                    watcher.rollback()
                    if started is not None:
                        self.waits_seen.add(started)
                    time.sleep(0.002)
                holder.rollback()
        finally:
            engine.dispose()


def test_a_blocked_statement_is_sent_again_until_it_gets_its_lock(
    engine: sqlalchemy.Engine, pg_url: str
) -> None:
    blocker = Blocker(pg_url)
    blocker.start()
    assert blocker.holding.wait(30)
    with migration(engine) as op, op.get_context().autocommit_block():
        with op.lock_retries(lock_timeout=0.01, retries=10_000):
            op.add_column("t", sqlalchemy.Column("c", sqlalchemy.Integer))
            # each statement in the block runs under SET LOCAL, this one too
            assert lock_timeout(engine, op) == "10ms"
        assert lock_timeout(engine, op) == "5s"  # the session's own, never changed
    blocker.join(30)
    assert len(blocker.waits_seen) >= 2  # it waited, gave up, and asked again
    columns = {column["name"] for column in sqlalchemy.inspect(engine).get_columns("t")}
    assert "c" in columns


def test_when_the_retries_run_out_the_error_goes_up_and_the_session_is_usable(
    engine: sqlalchemy.Engine, pg_url: str
) -> None:
    blocker = Blocker(pg_url, until_released=True)
    blocker.start()
    assert blocker.holding.wait(30)
    try:
        with migration(engine) as op, op.get_context().autocommit_block():
            with (
                pytest.raises(sqlalchemy.exc.OperationalError, match="lock timeout"),
                op.lock_retries(lock_timeout=0.005, retries=1),
            ):
                op.add_column("t", sqlalchemy.Column("c", sqlalchemy.Integer))
            assert lock_timeout(engine, op) == "5s"  # and no transaction left open
    finally:
        blocker.release.set()
        blocker.join(30)
    columns = {column["name"] for column in sqlalchemy.inspect(engine).get_columns("t")}
    assert "c" not in columns


def test_inside_a_transaction_it_refuses(engine: sqlalchemy.Engine) -> None:
    with migration(engine) as op, pytest.raises(UsageError, match="autocommit_block"):  # noqa: SIM117
        with op.lock_retries():
            pass


@pytest.mark.parametrize(
    ("arguments", "needle"),
    [({"lock_timeout": 0}, "lock_timeout"), ({"retries": -1}, "retries")],
)
def test_bad_arguments_are_usage_errors(
    engine: sqlalchemy.Engine, arguments: dict, needle: str
) -> None:
    with migration(engine) as op, pytest.raises(UsageError, match=needle):
        op.lock_retries(**arguments)


def test_sql_mode_writes_a_comment() -> None:
    buffer = io.StringIO()
    context = MigrationContext.configure(
        dialect_name="postgresql", opts={"as_sql": True, "output_buffer": buffer}
    )
    op = Operations(context)
    with op.lock_retries(lock_timeout=0.05, retries=3):
        op.execute("ALTER TABLE t ADD COLUMN c integer")
    output = buffer.getvalue()
    assert "-- op.lock_retries: each statement below in its own transaction" in output
    assert "SET LOCAL lock_timeout = '50ms'" in output
    assert "ALTER TABLE t ADD COLUMN c integer" in output
