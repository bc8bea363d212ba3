"""Records that must not be lost (issue 11, item 4).

SIGTERM (a CI cancel, `docker stop`, Kubernetes) used to kill a task at once: no rollback of the
revision in progress, no audit row, no finished log line. Ctrl-C during a long PostgreSQL
statement waited for the statement to end. A full log disk printed a traceback, and when it
filled during a run the migration was applied with no audit row. Every test here runs the task
the way a user does and fails without the fix.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess

import pytest

from tasks.core.errors import ExitCode
from tests.conftest import Result, schema_snapshot
from tests.guard.test_lock_concurrency import advisory_locks, audit_rows, backends_running
from tests.helpers import assert_ok, assert_one_line_error, stderr_lines, version_rows
from tests.revision_chains import counts, empty_chain, kill, scalar, spawn, wait_until

SLOW = "e10000000001"
SLEEP = "pg_sleep(600)"  # far longer than any wait below: only a cancel ends it in time


def chain_at_counter(project, url: str):  # type: ignore[no-untyped-def]
    """The development database at `url`, upgraded to a fresh chain's counter revision."""
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    chain = empty_chain(project.tmp / "scripts").use(project)
    assert_ok(project.invoke("dev.upgrade"))
    return chain


@pytest.fixture
def slow_dev(project, pg_url):
    """A development database at the counter revision, with a 10-minute revision pending."""
    chain = chain_at_counter(project, pg_url)
    chain.add(SLOW, "slow", f'op.execute("SELECT {SLEEP}")')
    return chain


def stop_during_the_slow_revision(pg_server, url: str, signum: int) -> Result:
    runner = spawn("dev.upgrade")
    try:
        wait_until(lambda: backends_running(pg_server, url, SLEEP) == 1, what="the slow revision")
        runner.send_signal(signum)
        stdout, stderr = runner.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        runner.kill()
        runner.communicate()
        raise AssertionError("the task did not stop on the signal") from None
    return Result(runner.returncode, stdout, stderr)


def assert_stopped_cleanly(project, pg_server, url: str, chain, what: str) -> None:  # type: ignore[no-untyped-def]
    # The statement was cancelled on the server, not left sleeping; the revision rolled back.
    wait_until(lambda: backends_running(pg_server, url, SLEEP) == 0, what="the cancel")
    assert SLOW not in counts(url)
    assert version_rows(schema_snapshot(url)) == [chain.ids[0]]
    assert advisory_locks(pg_server, url) == 0
    rows = [row for row in audit_rows(project) if row["task"] == "dev.upgrade"]
    assert (rows[0]["outcome"], rows[0]["error"]) == ("failed", what)
    finished = [
        record
        for record in project.log_records()
        if record["event"] == "task finished" and record["task"] == "dev.upgrade"
    ]
    assert (finished[-1]["outcome"], finished[-1]["error"]) == ("failed", what)


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGTERM, 143), (signal.SIGHUP, 129)],  # a CI cancel; a closed terminal or SSH
    ids=["SIGTERM", "SIGHUP"],
)
def test_a_stop_signal_rolls_back_audits_and_exits_128_plus_it(
    project, pg_server, pg_url, slow_dev, signum, code
):
    result = stop_during_the_slow_revision(pg_server, pg_url, signum)

    what = f"terminated ({signal.Signals(signum).name})"
    assert_one_line_error(result, code, what)
    assert_stopped_cleanly(project, pg_server, pg_url, slow_dev, what)


@pytest.mark.postgres
def test_ctrl_c_cancels_the_long_statement_on_the_server(project, pg_server, pg_url, slow_dev):
    result = stop_during_the_slow_revision(pg_server, pg_url, signal.SIGINT)

    assert_one_line_error(result, 130, "interrupted")
    assert_stopped_cleanly(project, pg_server, pg_url, slow_dev, "interrupted")


@pytest.mark.postgres
def test_an_error_raised_while_the_stop_unwinds_does_not_replace_it(project, pg_server, pg_url):
    """A revision whose `finally` uses the connection the stop invalidated: SQLAlchemy raises
    "Can't reconnect until invalid transaction is rolled back" there, and that error used to
    reach the top (exit 1, a database error) in place of the stop the operator asked for (the
    same happened under load inside op.backfill's batch transaction)."""
    chain = chain_at_counter(project, pg_url)
    chain.add(
        SLOW,
        "cleans up after itself",
        f"""
        try:
            op.execute("SELECT {SLEEP}")
        finally:
            op.execute("SELECT 1")
        """,
    )

    result = stop_during_the_slow_revision(pg_server, pg_url, signal.SIGTERM)

    assert_one_line_error(result, 143, "terminated (SIGTERM)")
    assert "reconnect" not in result.output
    assert_stopped_cleanly(project, pg_server, pg_url, chain, "terminated (SIGTERM)")


# --- a full log disk --------------------------------------------------------------------------


@pytest.fixture
def dev(project, pg_url):
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)
    return pg_url


@pytest.mark.postgres
def test_a_full_log_disk_refuses_the_task_in_one_line(project, dev):
    project.setenv("INVOKE_MIGRATIONS_LOG_FILE", "/dev/full")  # every write: ENOSPC
    before = schema_snapshot(dev)

    result = project.invoke_subprocess("dev.upgrade")

    assert_one_line_error(result, ExitCode.USAGE, "cannot write the run log", "No space left")
    assert schema_snapshot(dev) == before


# A revision that makes the disk "fill up" in the middle of the run: the run log's descriptor
# (found through /proc) is pointed at /dev/full, so the finish line fails with ENOSPC.
FILL_THE_LOG_DISK = """
import os
log = os.environ["INVOKE_MIGRATIONS_LOG_FILE"]
full = os.open("/dev/full", os.O_WRONLY)
for fd in os.listdir("/proc/self/fd"):
    try:
        if os.readlink(f"/proc/self/fd/{fd}") == log:
            os.dup2(full, int(fd))
    except OSError:
        pass
os.close(full)
"""


@pytest.mark.postgres
def test_a_log_disk_that_fills_during_the_run_keeps_the_audit_row(project, dev):
    chain = empty_chain(project.tmp / "scripts").use(project)
    chain.add("e20000000001", "fills the log disk", FILL_THE_LOG_DISK)

    result = project.invoke_subprocess("dev.upgrade")

    assert result.code == ExitCode.OK, result.output  # the migration itself succeeded
    assert "Traceback" not in result.output
    lines = stderr_lines(result)
    assert len(lines) == 1 and "could not write the run log" in lines[0], result.stderr
    assert "No space left on device" in lines[0]
    # What the log holds is whole lines only: the start of this run, nothing half-written.
    text = project.log_file.read_text()
    assert text.endswith("\n")
    events = [json.loads(line)["event"] for line in text.splitlines()]
    assert events[-1] == "task started"
    assert version_rows(schema_snapshot(dev)) == [chain.head]
    rows = [row for row in audit_rows(project) if row["task"] == "dev.upgrade"]
    assert rows[0]["outcome"] == "ok" and rows[0]["revision_after"] == chain.head


# The disk fills in the middle of the finish line: RLIMIT_FSIZE lets the write through up to a
# few bytes past the log's current end, then fails it (EFBIG), as a nearly full disk does.
FILL_MID_LINE = """
import os, resource, signal
from tasks.guard.audit import git_commit
from tasks.core.settings import PROJECT_ROOT
git_commit(PROJECT_ROOT)  # cached now: git, run later, would inherit the limit
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
size = os.path.getsize(os.environ["INVOKE_MIGRATIONS_LOG_FILE"])
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 20, resource.RLIM_INFINITY))
"""


@pytest.mark.postgres
def test_a_log_disk_that_fills_mid_line_leaves_no_half_line(project, dev):
    chain = empty_chain(project.tmp / "scripts").use(project)
    chain.add("e30000000001", "fills the log disk mid-line", FILL_MID_LINE)

    result = project.invoke_subprocess("dev.upgrade")

    assert result.code == ExitCode.OK, result.output
    assert "Traceback" not in result.output
    lines = stderr_lines(result)
    assert len(lines) == 1 and "could not write the run log" in lines[0], result.stderr
    text = project.log_file.read_text()
    assert text.endswith("\n"), text[-80:]
    assert [json.loads(line)["event"] for line in text.splitlines()][-1] == "task started"
    rows = [row for row in audit_rows(project) if row["task"] == "dev.upgrade"]
    assert rows[0]["outcome"] == "ok" and rows[0]["revision_after"] == chain.head


# --- MariaDB ----------------------------------------------------------------------------------

MYSQL_WAIT = "UPDATE gate SET id = 1"  # queues behind the test's row lock for up to 10 minutes


def mysql_statements_running(fragment: str, url: str) -> int:
    """Statements containing `fragment` on the database of `url` only: the process list is
    server-wide, and another worker may run the same test's statement at the same moment."""
    import sqlalchemy

    from tests.conftest import MYSQL_ADMIN_URL

    engine = sqlalchemy.create_engine(MYSQL_ADMIN_URL, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            return connection.execute(
                sqlalchemy.text(
                    "SELECT count(*) FROM information_schema.PROCESSLIST "
                    "WHERE INFO LIKE :pattern AND DB = :database AND ID <> CONNECTION_ID()"
                ),
                {"pattern": f"%{fragment}%", "database": sqlalchemy.make_url(url).database},
            ).scalar()
    finally:
        engine.dispose()


@pytest.mark.mysql
@pytest.mark.parametrize(
    ("signum", "code", "what"),
    [(signal.SIGTERM, 143, "terminated (SIGTERM)"), (signal.SIGINT, 130, "interrupted")],
    ids=["SIGTERM", "SIGINT"],
)
def test_mariadb_statement_is_killed_on_the_server_when_the_task_stops(
    project, mysql_url, signum, code, what
):
    import sqlalchemy

    chain = chain_at_counter(project, mysql_url)
    chain.add(
        SLOW,
        "waits for a row lock",
        f"""
        op.execute("SET SESSION innodb_lock_wait_timeout = 600")
        op.execute("{MYSQL_WAIT} WHERE id = 1")
        """,
    )
    engine = sqlalchemy.create_engine(mysql_url, poolclass=sqlalchemy.pool.NullPool)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("CREATE TABLE gate (id int PRIMARY KEY)"))
        connection.execute(sqlalchemy.text("INSERT INTO gate VALUES (1)"))

    # Unlike SLEEP(), a row-lock wait goes on when the client disconnects: only a KILL ends it.
    with engine.connect() as holder:
        holder.execute(sqlalchemy.text("SELECT id FROM gate WHERE id = 1 FOR UPDATE"))
        runner = spawn("dev.upgrade")
        try:
            wait_until(
                lambda: mysql_statements_running(MYSQL_WAIT, mysql_url), what="the waiting revision"
            )
            runner.send_signal(signum)
            stdout, stderr = runner.communicate(timeout=60)
        finally:
            if runner.poll() is None:
                runner.kill()
                runner.communicate()
        # KILL QUERY: the server stops the statement now, while the row is still locked.
        wait_until(
            lambda: mysql_statements_running(MYSQL_WAIT, mysql_url) == 0, timeout=15, what="KILL"
        )
        holder.rollback()
    engine.dispose()

    assert_one_line_error(Result(runner.returncode, stdout, stderr), code, what)
    assert SLOW not in counts(mysql_url)
    rows = [row for row in audit_rows(project) if row["task"] == "dev.upgrade"]
    assert (rows[0]["outcome"], rows[0]["error"]) == ("failed", what)


@pytest.mark.hostile
@pytest.mark.mysql
def test_a_stopped_mariadb_revision_names_the_table_it_left_behind(project, mysql_url):
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    chain.add("d00000000001", "base", 'op.execute("CREATE TABLE kept (id int)")', record=False)
    project.setenv("DATABASE_URL_DEVELOPMENT", mysql_url)
    assert project.invoke("dev.upgrade").code == ExitCode.OK
    body = 'op.execute("CREATE TABLE left_over (id int)")\nop.execute("SELECT SLEEP(60)")'
    chain.add("d00000000002", "slow after ddl", body, record=False)

    runner = spawn("dev.upgrade")
    try:
        wait_until(
            lambda: "left_over" in schema_snapshot(mysql_url), timeout=60, what="the DDL to commit"
        )
        runner.send_signal(signal.SIGTERM)
        stdout, stderr = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            kill(runner)

    assert runner.returncode == 143, stderr
    assert version_rows(schema_snapshot(mysql_url)) == ["d00000000001"]
    assert "left_over" in stderr, stderr
    assert "DROP TABLE `left_over`" in stdout, stdout


@pytest.mark.hostile
@pytest.mark.postgres
def test_ctrl_c_pressed_repeatedly_still_ends_audited(project, pg_url):
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    chain.add("e00000000001", "base", 'op.execute("CREATE TABLE kept (id int)")', record=False)
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)
    assert project.invoke("dev.upgrade").code == ExitCode.OK
    chain.add("e00000000002", "slow", 'op.execute("SELECT pg_sleep(60)")', record=False)
    sleeping = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND query LIKE 'SELECT pg_sleep(60)%'"
    )

    runner = spawn("dev.upgrade")
    try:
        wait_until(lambda: scalar(pg_url, sleeping), timeout=60, what="the revision to run")
        while runner.poll() is None:  # an impatient user: Ctrl-C, Ctrl-C, Ctrl-C ...
            runner.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                runner.wait(timeout=0.01)
        stdout, stderr = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            kill(runner)

    assert runner.returncode == 130, (runner.returncode, stdout, stderr)
    assert stderr.strip() == "dev.upgrade: interrupted", stderr
    outcome = "SELECT outcome FROM migration_audit ORDER BY id DESC LIMIT 1"
    assert scalar(pg_url, outcome) == "failed"
    assert version_rows(schema_snapshot(pg_url)) == ["e00000000001"]
