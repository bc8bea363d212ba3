"""A lost migration lock must stop its runner (issue 11, item 3).

The lock lives on its own connection. When that session ends in the middle of a run (a KILL,
`pg_terminate_backend`, `idle_session_timeout`, `wait_timeout`, a proxy), the server hands the
lock to the next runner. The first runner must notice before its revision commits, roll it back
and stop with exit 6 and an audit row saying so, instead of racing the new holder through the
same revisions. The lock's session must also not be ended for being idle, and a SQLite file is
locked by its real path, whatever path reached it.
"""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy
from sqlalchemy.engine import make_url

from tasks.core.errors import ExitCode, LockLost
from tasks.guard.lock import _AdvisoryLock, migration_lock, verify_lock
from tests.conftest import Result
from tests.guard.test_lock_backends import environment_for
from tests.guard.test_lock_concurrency import GATE, advisory_locks, audit_rows, backends_running
from tests.helpers import assert_ok, assert_one_line_error, sqlite_url
from tests.revision_chains import counts, create_table, empty_chain, spawn, wait_until

REVISION = "d10000000001"
KEY = _AdvisoryLock.KEY


def finished(process) -> Result:  # type: ignore[no-untyped-def]
    stdout, stderr = process.communicate(timeout=120)
    return Result(process.returncode, stdout, stderr)


def assert_lock_lost(result: Result) -> None:
    assert_one_line_error(result, ExitCode.LOCK_LOST, "migration lock lost", "rolled back")
    assert int(ExitCode.LOCK_LOST) == 6


def assert_one_row_says_lost(project) -> None:  # type: ignore[no-untyped-def]
    rows = [row for row in audit_rows(project) if row["task"] == "dev.upgrade"]
    lost = [row for row in rows if row["error"] and "migration lock lost" in row["error"]]
    assert len(lost) == 1, rows
    assert lost[0]["outcome"] == "failed"


# --- PostgreSQL -------------------------------------------------------------------------------


def lock_backend_pid(pg_server, url: str) -> int | None:
    """The server pid of the session holding our advisory lock in the test database."""
    database = make_url(url).database
    with pg_server.connect() as connection:
        return connection.execute(
            sqlalchemy.text(
                "SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = :name "
                "AND l.classid = :high AND l.objid = :low"
            ),
            {
                "name": database,
                "high": _AdvisoryLock.KEY >> 32,
                "low": _AdvisoryLock.KEY & 0xFFFFFFFF,
            },
        ).scalar()


@pytest.fixture
def pg_dev(project, pg_url):
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)
    chain = empty_chain(project.tmp / "scripts").use(project)
    assert_ok(project.invoke("dev.upgrade"))  # the counter table; the revision under test next
    chain.add(
        REVISION,
        "gated",
        f"""
        op.execute("SET LOCAL lock_timeout = 0")
        op.execute("SELECT pg_advisory_xact_lock({GATE})")
        """,
    )
    return pg_url


@pytest.mark.postgres
def test_postgresql_terminated_lock_session_stops_the_run_before_commit(project, pg_dev, pg_server):
    gate_engine = sqlalchemy.create_engine(pg_dev, poolclass=sqlalchemy.pool.NullPool)
    gate = gate_engine.connect()
    gate.execute(sqlalchemy.text(f"SELECT pg_advisory_lock({GATE})"))
    first = spawn("dev.upgrade")
    second = None
    try:
        wait_until(lambda: backends_running(pg_server, pg_dev, "pg_advisory_xact_lock") == 1)
        pid = lock_backend_pid(pg_server, pg_dev)
        assert pid is not None
        with pg_server.connect() as admin:
            admin.execute(sqlalchemy.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        # The server gave the lock away: a second runner takes it and reaches the same revision.
        second = spawn("dev.upgrade")
        wait_until(lambda: backends_running(pg_server, pg_dev, "pg_advisory_xact_lock") == 2)
    finally:
        gate.close()
        gate_engine.dispose()
        first_result = finished(first)
        second_result = finished(second) if second is not None else None

    assert_lock_lost(first_result)
    assert second_result is not None
    assert_ok(second_result)
    assert counts(pg_dev) == {REVISION: 1}
    assert_one_row_says_lost(project)
    assert advisory_locks(pg_server, pg_dev) == 0


@pytest.mark.postgres
def test_postgresql_lock_lost_during_the_backup_stops_before_the_first_revision(
    project, pg_url, pg_server
):
    """A long backup (here: pg_dump queued behind a table lock) is where a proxy or an idle
    timeout ends the lock's session; the downgrade after it must not start."""
    from tests.guard.test_child_processes import DUMP_WAITING, table_locked

    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)
    chain = empty_chain(project.tmp / "scripts").use(project)
    chain.add("d20000000001", "one", create_table("one"), 'op.drop_table("one")')
    assert_ok(project.invoke("dev.upgrade"))

    with table_locked(pg_url, "one", "ACCESS EXCLUSIVE"):
        runner = spawn("dev.downgrade", "--rev", "base", "--yes")
        try:
            wait_until(lambda: backends_running(pg_server, pg_url, DUMP_WAITING), what="pg_dump")
            pid = lock_backend_pid(pg_server, pg_url)
            assert pid is not None
            with pg_server.connect() as admin:
                admin.execute(sqlalchemy.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        except BaseException:
            runner.kill()
            raise
    result = finished(runner)  # the table lock is gone: the backup completes

    line = assert_one_line_error(result, ExitCode.LOCK_LOST, "migration lock lost")
    assert "before revision d20000000001 started" in line
    assert counts(pg_url) == {"d20000000001": 1}  # nothing was reverted
    rows = [row for row in audit_rows(project) if row["task"] == "dev.downgrade"]
    assert rows[0]["outcome"] == "failed" and "migration lock lost" in rows[0]["error"]


@pytest.fixture
def idle_role(pg_server, pg_url):
    """A throwaway login role whose sessions the server ends after one idle second."""
    role = f"idle_{uuid.uuid4().hex[:8]}"
    database = make_url(pg_url).database
    with pg_server.connect() as admin:
        admin.execute(sqlalchemy.text(f'CREATE ROLE "{role}" LOGIN'))
        admin.execute(sqlalchemy.text(f"ALTER ROLE \"{role}\" SET idle_session_timeout = '1s'"))
        admin.execute(sqlalchemy.text(f'GRANT ALL ON DATABASE "{database}" TO "{role}"'))
    yield make_url(pg_url).set(username=role).render_as_string(hide_password=False)
    with pg_server.connect() as admin:
        admin.execute(
            sqlalchemy.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :role"
            ),
            {"role": role},
        )
        admin.execute(sqlalchemy.text(f'DROP OWNED BY "{role}"'))
        admin.execute(sqlalchemy.text(f'DROP ROLE "{role}"'))


def idle_for_three_seconds_or_gone(pg_server, url: str) -> bool:
    """True once the role's lock session has sat idle well past its 1 s timeout, or has ended."""
    with pg_server.connect() as connection:
        sessions = connection.execute(
            sqlalchemy.text(
                "SELECT now() - state_change > interval '3 seconds' FROM pg_stat_activity "
                "WHERE usename = :role AND datname = :database"
            ),
            {"role": make_url(url).username, "database": make_url(url).database},
        ).scalars()
        states = list(sessions)
    return not states or all(states)


@pytest.mark.postgres
def test_postgresql_idle_session_timeout_does_not_end_the_lock(pg_server, idle_role):
    with migration_lock(environment_for(idle_role), label="idle holder", timeout=0):
        wait_until(
            lambda: idle_for_three_seconds_or_gone(pg_server, idle_role),
            timeout=30,
            what="the lock session to sit idle past idle_session_timeout",
        )
        assert advisory_locks(pg_server, idle_role) == 1
        verify_lock("in the test")  # raises LockLost if the session was ended


# --- MariaDB ----------------------------------------------------------------------------------


def mysql_scalar(sql: str, **params: object) -> object:
    from tests.conftest import MYSQL_ADMIN_URL

    engine = sqlalchemy.create_engine(MYSQL_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            result = connection.execute(sqlalchemy.text(sql), params)
            return result.scalar() if result.returns_rows else None
    finally:
        engine.dispose()


def waiting_on(gate: str) -> int:
    """Sessions blocked in GET_LOCK(gate) (revisions held at the gate)."""
    return int(
        mysql_scalar(
            "SELECT count(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE :pattern "
            "AND ID <> CONNECTION_ID()",
            pattern=f"%GET_LOCK('{gate}'%",
        )
    )


@pytest.mark.mysql
def test_mariadb_killed_lock_connection_stops_the_run_before_commit(project, mysql_url):
    project.setenv("DATABASE_URL_DEVELOPMENT", mysql_url)
    chain = empty_chain(project.tmp / "scripts").use(project)
    assert_ok(project.invoke("dev.upgrade"))
    gate_name = f"gate-{uuid.uuid4().hex[:8]}"
    chain.add(
        REVISION,
        "gated",
        f"""
        op.execute("SELECT GET_LOCK('{gate_name}', 120)")
        op.execute("SELECT RELEASE_LOCK('{gate_name}')")
        """,
    )
    lock_name = f"migration-tasks:{make_url(mysql_url).database}"
    gate_engine = sqlalchemy.create_engine(mysql_url, poolclass=sqlalchemy.pool.NullPool)
    gate = gate_engine.connect()
    gate.execute(sqlalchemy.text(f"SELECT GET_LOCK('{gate_name}', 0)"))
    first = spawn("dev.upgrade")
    second = None
    try:
        wait_until(lambda: waiting_on(gate_name) == 1, what="the first runner at the gate")
        holder = mysql_scalar("SELECT IS_USED_LOCK(:name)", name=lock_name)
        assert holder is not None
        mysql_scalar(f"KILL {int(holder)}")  # what wait_timeout or a proxy does
        second = spawn("dev.upgrade")
        wait_until(lambda: waiting_on(gate_name) == 2, what="the second runner at the gate")
    finally:
        gate.close()
        gate_engine.dispose()
        first_result = finished(first)
        second_result = finished(second) if second is not None else None

    assert_lock_lost(first_result)
    assert second_result is not None
    assert_ok(second_result)
    assert counts(mysql_url) == {REVISION: 1}  # the data change happened once
    assert_one_row_says_lost(project)


@pytest.mark.mysql
def test_mariadb_lock_session_does_not_time_out_while_idle(mysql_url):
    with migration_lock(environment_for(mysql_url), label="idle holder", timeout=0) as held:
        connection = held._lock.connection  # type: ignore[attr-defined]
        wait_timeout = connection.exec_driver_sql("SELECT @@SESSION.wait_timeout").scalar()
    assert int(wait_timeout) >= 31536000  # the server default (8 hours) would end it


# --- SQLite -----------------------------------------------------------------------------------


def test_sqlite_file_reached_through_a_symlink_is_locked_by_its_real_path(project):
    real = project.tmp / "real" / "dev.sqlite3"
    real.parent.mkdir()
    link = project.tmp / "link.sqlite3"
    link.symlink_to(real)
    chain = empty_chain(project.tmp / "scripts").use(project)
    chain.add("a50000000001", "one", create_table("one"))
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url(link))

    with migration_lock(environment_for(sqlite_url(real)), label="holder by real path", timeout=0):
        result = project.invoke("dev.upgrade", "--lock-timeout", "0")

    assert_one_line_error(result, ExitCode.LOCKED, "holder by real path")
    assert (
        not real.exists()
        or "one"
        not in sqlalchemy.inspect(sqlalchemy.create_engine(sqlite_url(real))).get_table_names()
    )


def test_sqlite_lock_file_replaced_under_a_holder_is_a_lost_lock(project):
    url = sqlite_url(project.tmp / "dev.sqlite3")
    with migration_lock(environment_for(url), label="holder", timeout=0):
        lock_file = project.tmp / "dev.sqlite3.migration-lock"
        lock_file.unlink()  # a cleanup script; the next runner would lock a brand-new file
        with (
            migration_lock(environment_for(url), label="second", timeout=0),
            pytest.raises(LockLost, match="migration lock lost"),
        ):
            verify_lock("in the test")
