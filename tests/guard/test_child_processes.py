"""Child processes must not outlive the task (issue 11, item 5).

A SIGKILL or SIGTERM during a backup left `pg_dump` dumping production after the migration lock
was released, and a full-size `*.partial` file forever; a task killed during `local.restore`
left `psql` to commit the restore on its own. `pg_dump` also waited without limit behind an
ACCESS EXCLUSIVE lock while its task held the migration lock. All on the real PostgreSQL server,
with the task in a subprocess, the way a CI runner or Kubernetes ends it.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy.engine import make_url

from tests.conftest import Result
from tests.guard.test_lock_concurrency import advisory_locks, backends_running
from tests.helpers import assert_ok, assert_one_line_error
from tests.revision_chains import create_table, empty_chain, spawn, wait_until

pytestmark = pytest.mark.postgres

DUMP_WAITING = "IN ACCESS SHARE MODE"  # pg_dump locks each table first: it queues behind us


@contextmanager
def table_locked(url: str, table: str, mode: str) -> Iterator[None]:
    """Hold `mode` on `table` in an open transaction for the duration of the block."""
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f"LOCK TABLE {table} IN {mode} MODE"))
            yield
            connection.rollback()
    finally:
        engine.dispose()


def other_sessions(pg_server, url: str) -> int:
    database = make_url(url).database
    with pg_server.connect() as connection:
        return connection.execute(
            sqlalchemy.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = :name "
                "AND pid <> pg_backend_pid()"
            ),
            {"name": database},
        ).scalar()


def sessions_waiting_on_a_lock(pg_server, url: str) -> int:
    database = make_url(url).database
    with pg_server.connect() as connection:
        return connection.execute(
            sqlalchemy.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = :name "
                "AND wait_event_type = 'Lock'"
            ),
            {"name": database},
        ).scalar()


def processes_writing_for(task_pid: int) -> list[int]:
    """Live processes whose command line names a partial file of task `task_pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"-{task_pid}.partial" in command and state != "Z":
            found.append(int(entry.name))
    return found


def partials(project) -> list[str]:  # type: ignore[no-untyped-def]
    if not project.backup_dir.exists():
        return []
    return sorted(path.name for path in project.backup_dir.glob("*.partial"))


def finished(process: subprocess.Popen[str], timeout: float = 60) -> Result:
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError(f"the task was still running after {timeout} s") from None
    return Result(process.returncode, stdout, stderr)


@pytest.fixture
def dev(project, pg_url):
    """A development database with one applied revision (table `one`) to downgrade."""
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)
    chain = empty_chain(project.tmp / "scripts").use(project)
    chain.add("b10000000001", "one", create_table("one"), 'op.drop_table("one")')
    assert_ok(project.invoke("dev.upgrade"))
    return pg_url


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_backup_takes_pg_dump_with_it(project, pg_server, dev, signum):
    # pg_dump's own lock wait must not end it first: only the task's death may.
    project.setenv("INVOKE_MIGRATIONS_ENVIRONMENTS_DEVELOPMENT_POSTGRES_LOCK_TIMEOUT", "10min")
    with table_locked(dev, "one", "ACCESS EXCLUSIVE"):
        runner = spawn("dev.downgrade", "--rev", "base", "--yes")
        try:
            wait_until(lambda: backends_running(pg_server, dev, DUMP_WAITING), what="pg_dump")
        finally:
            runner.send_signal(signum)
            result = finished(runner)
        # The task is gone: so is its pg_dump, though the lock it waits for is still held.
        wait_until(
            lambda: not processes_writing_for(runner.pid),
            timeout=15,
            what="pg_dump to die with its task",
        )
    wait_until(lambda: advisory_locks(pg_server, dev) == 0, timeout=15, what="the lock")
    if signum == signal.SIGTERM:
        assert_one_line_error(result, 143, "terminated (SIGTERM)")
        assert partials(project) == []  # removed on the way out
    else:
        assert len(partials(project)) == 1  # SIGKILL: nothing runs; the next start removes it

    # The next backup into the same directory removes the dead writer's partial file.
    project.setenv("DATABASE_URL_LOCAL", dev)
    assert_ok(project.invoke_alone("local.backup"))
    assert partials(project) == []
    assert len(list(project.backup_dir.glob("*.dump"))) == 1


def test_pg_dump_gives_up_behind_an_access_exclusive_lock(project, pg_server, dev):
    # development's postgres_lock_timeout is 5s: pg_dump waits that long, not forever.
    with table_locked(dev, "one", "ACCESS EXCLUSIVE"):
        result = finished(spawn("dev.downgrade", "--rev", "base", "--yes"))

    assert_one_line_error(result, 1, "pg_dump failed", "canceling statement")
    assert partials(project) == []
    assert list(project.backup_dir.glob("*.dump")) == []
    with sqlalchemy.create_engine(dev).connect() as connection:  # nothing was downgraded
        assert sqlalchemy.inspect(connection).has_table("one")


def test_a_killed_restore_does_not_commit_after_the_task_died(project, pg_server, pg_url):
    project.setenv("DATABASE_URL_LOCAL", pg_url)
    engine = sqlalchemy.create_engine(pg_url, poolclass=sqlalchemy.pool.NullPool)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("CREATE TABLE in_backup (id int)"))
    assert_ok(project.invoke("local.backup"))
    (backup,) = project.backup_dir.glob("*.dump")
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("CREATE TABLE after_backup (id int)"))

    # The restore's psql queues behind our lock while dropping `after_backup`; the task has
    # already written the whole (small) restore, COMMIT included, into psql's stdin.
    with table_locked(pg_url, "after_backup", "ACCESS SHARE"):
        runner = spawn("local.restore", "--file", str(backup), "--yes")
        try:
            wait_until(
                lambda: sessions_waiting_on_a_lock(pg_server, pg_url), what="psql at the lock"
            )
        finally:
            runner.send_signal(signal.SIGKILL)
            finished(runner)
    # Our lock is gone: an orphaned psql would now drop, restore and commit.
    wait_until(lambda: other_sessions(pg_server, pg_url) == 0, timeout=30, what="psql to end")

    with engine.connect() as connection:
        inspector = sqlalchemy.inspect(connection)
        assert inspector.has_table("after_backup"), "the restore was committed after the kill"
    engine.dispose()
