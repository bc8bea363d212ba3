"""Failed revisions stay failed (issue 16): a revision whose statements commit on their own
(MariaDB DDL, a PostgreSQL autocommit block) and that does not finish is never run again from the
top. The lock is checked before each such statement, so a run that lost its lock stops before its
next one and says what had committed; every later upgrade refuses with exit 8 until
`<env>.repair` records what a person did, audited.

Each revision under test inserts a row per run into the counter table, so "ran once" is counted,
not inferred.
"""

from __future__ import annotations

import json
import uuid

import pytest
import sqlalchemy
from sqlalchemy.engine import make_url

from tasks.core.errors import ExitCode
from tests.guard.test_lock_concurrency import GATE, audit_rows
from tests.guard.test_lock_liveness import finished, lock_backend_pid, mysql_scalar, waiting_on
from tests.helpers import assert_ok, assert_one_line_error
from tests.revision_chains import counts, empty_chain, kill, scalar, spawn, wait_until

REVISION = "f16000000001"
NEXT = "f16000000002"


def tables(url: str) -> set[str]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return set(sqlalchemy.inspect(connection).get_table_names())
    finally:
        engine.dispose()


def execute(url: str, *statements: str) -> None:
    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            for statement in statements:
                connection.execute(sqlalchemy.text(statement))
    finally:
        engine.dispose()


def assert_refused_until_repair(project, url: str) -> str:  # type: ignore[no-untyped-def]
    """The next upgrade (and downgrade) refuses with exit 8, naming the revision and the way
    out, and changes nothing."""
    before = counts(url)
    refused = project.invoke("dev.upgrade")
    line = assert_one_line_error(
        refused, ExitCode.REVISION_NOT_FINISHED, f"revision {REVISION} did not finish", "repair"
    )
    assert int(ExitCode.REVISION_NOT_FINISHED) == 8
    assert counts(url) == before
    down = project.invoke("dev.downgrade", "--rev", "-1", "--yes", "--no-backup")
    assert_one_line_error(down, ExitCode.REVISION_NOT_FINISHED, REVISION)
    assert_current_reports_it(project)
    return line


def assert_current_reports_it(project) -> None:  # type: ignore[no-untyped-def]
    """`current` does not call a database with an unfinished revision settled: it names the
    revision and the repair, and `--check` exits 8 as the next upgrade would."""
    current = project.invoke("dev.current")
    assert_ok(current)
    assert f"revision {REVISION} did not finish" in current.stdout
    assert "dev.repair" in current.stdout
    checked = project.invoke("dev.current", "--check")
    assert_one_line_error(
        checked, ExitCode.REVISION_NOT_FINISHED, f"revision {REVISION} did not finish", "repair"
    )


def assert_repair_audited(project, how: str) -> None:  # type: ignore[no-untyped-def]
    rows = [row for row in audit_rows(project) if row["task"] == "dev.repair"]
    assert len(rows) == 1, rows
    assert rows[0]["outcome"] == "ok"
    assert f'"{how}": true' in rows[0]["arguments"] or rows[0]["arguments"].get(how) is True


# --- MariaDB: DDL commits on its own ----------------------------------------------------------


@pytest.fixture
def mariadb_chain(project, mysql_url):  # type: ignore[no-untyped-def]
    project.setenv("DATABASE_URL_DEVELOPMENT", mysql_url)
    chain = empty_chain(project.tmp / "scripts").use(project)
    assert_ok(project.invoke("dev.upgrade"))
    return chain


def gated_mariadb_revision(chain, gate: str) -> None:  # type: ignore[no-untyped-def]
    """Inserts its row, creates one table (committing the row), waits at the gate, then
    creates a second table."""
    chain.add(
        REVISION,
        "two tables",
        f"""
        op.create_table("first_half", sa.Column("id", sa.Integer))
        op.execute("SELECT GET_LOCK('{gate}', 120)")
        op.execute("SELECT RELEASE_LOCK('{gate}')")
        op.create_table("second_half", sa.Column("id", sa.Integer))
        """,
        'op.drop_table("second_half")\nop.drop_table("first_half")',
    )


@pytest.mark.mysql
def test_mariadb_lost_lock_runs_the_data_change_once_and_refuses_until_repair(
    project, mysql_url, mariadb_chain
):
    gate = f"gate-{uuid.uuid4().hex[:8]}"
    gated_mariadb_revision(mariadb_chain, gate)
    lock_name = f"migration-tasks:{make_url(mysql_url).database}"
    gate_engine = sqlalchemy.create_engine(mysql_url, poolclass=sqlalchemy.pool.NullPool)
    holder = gate_engine.connect()
    holder.execute(sqlalchemy.text(f"SELECT GET_LOCK('{gate}', 0)"))
    first = spawn("dev.upgrade")
    second_result = None
    try:
        wait_until(lambda: waiting_on(gate) == 1, what="the first runner at the gate")
        lock_session = mysql_scalar("SELECT IS_USED_LOCK(:name)", name=lock_name)
        assert lock_session is not None
        mysql_scalar(f"KILL {int(lock_session)}")
        # The server gave the lock away: a second runner takes it and must not run REVISION.
        second_result = finished(spawn("dev.upgrade"))
    finally:
        holder.close()
        gate_engine.dispose()
        first_result = finished(first)

    line = assert_one_line_error(first_result, ExitCode.LOCK_LOST, "migration lock lost")
    assert "rolled back" not in line
    assert f"revision {REVISION} stopped part way" in line
    assert "first_half" in line  # what it left, from the schema read before it started
    assert second_result is not None
    assert_one_line_error(second_result, ExitCode.REVISION_NOT_FINISHED, REVISION)
    assert counts(mysql_url) == {REVISION: 1}
    assert "second_half" not in tables(mysql_url)  # stopped before its next statement

    assert_refused_until_repair(project, mysql_url)
    # A person finishes the revision by hand and says so.
    execute(mysql_url, "CREATE TABLE second_half (id INTEGER)")
    repaired = project.invoke("dev.repair", "-r", REVISION, "--applied", "--yes")
    assert_ok(repaired)
    assert_repair_audited(project, "applied")
    assert scalar(mysql_url, "SELECT version_num FROM alembic_version") == REVISION
    assert_ok(project.invoke("dev.upgrade"))  # nothing to do: at head
    assert counts(mysql_url) == {REVISION: 1}


@pytest.mark.mysql
def test_mariadb_failure_part_way_refuses_then_reverted_runs_it_again(
    project, mysql_url, mariadb_chain
):
    mariadb_chain.add(
        REVISION,
        "fails after ddl",
        """
        op.create_table("first_half", sa.Column("id", sa.Integer))
        op.execute("SELECT * FROM no_such_table")
        """,
        'op.drop_table("first_half")',
    )
    failed = project.invoke("dev.upgrade")
    line = assert_one_line_error(failed, ExitCode.FAILED, f"revision {REVISION} failed")
    assert "first_half" in line and f"dev.repair -r {REVISION}" in line
    assert counts(mysql_url) == {REVISION: 1}
    assert_refused_until_repair(project, mysql_url)
    assert counts(mysql_url) == {REVISION: 1}

    # The person undoes what it left, fixes the revision, and records that.
    undo = f"DELETE FROM applied WHERE revision = '{REVISION}'"
    execute(mysql_url, "DROP TABLE first_half", undo)
    path = next(mariadb_chain.scripts.versions.glob(f"{REVISION}_*.py"))
    path.write_text(path.read_text().replace("no_such_table", "applied"))
    assert_ok(project.invoke("dev.repair", "-r", REVISION, "--reverted", "--yes"))
    assert_repair_audited(project, "reverted")
    assert_ok(project.invoke("dev.upgrade"))
    assert counts(mysql_url) == {REVISION: 1}


@pytest.mark.mysql
def test_mariadb_downgrade_failing_part_way_is_not_reported_at_head(
    project, mysql_url, mariadb_chain
):
    """A downgrade that committed DDL and then failed leaves the version table at head: by
    that table alone `current --check` said "at head" and exited 0, while every upgrade and
    downgrade refused."""
    mariadb_chain.add(
        REVISION,
        "downgrade fails after ddl",
        'op.create_table("kept", sa.Column("id", sa.Integer))',
        'op.drop_table("kept")\nop.execute("SELECT * FROM no_such_table")',
    )
    assert_ok(project.invoke("dev.upgrade"))
    failed = project.invoke("dev.downgrade", "--rev", "-1", "--yes")
    assert_one_line_error(failed, ExitCode.FAILED, f"revision {REVISION} failed")
    assert scalar(mysql_url, "SELECT version_num FROM alembic_version") == REVISION

    assert_current_reports_it(project)
    document = json.loads(project.invoke("dev.current", "--json").stdout)
    assert document["details"]["unfinished"] == [
        {"revision": REVISION, "direction": "downgrade", "runs_again": False}
    ]


@pytest.mark.mysql
def test_mariadb_sigkill_after_ddl_refuses_until_repair(project, mysql_url, mariadb_chain):
    gate = f"gate-{uuid.uuid4().hex[:8]}"
    gated_mariadb_revision(mariadb_chain, gate)
    gate_engine = sqlalchemy.create_engine(mysql_url, poolclass=sqlalchemy.pool.NullPool)
    holder = gate_engine.connect()
    holder.execute(sqlalchemy.text(f"SELECT GET_LOCK('{gate}', 0)"))
    runner = spawn("dev.upgrade")
    try:
        wait_until(lambda: waiting_on(gate) == 1, what="the runner at the gate")
        kill(runner)
    finally:
        holder.close()
        gate_engine.dispose()
    wait_until(lambda: waiting_on(gate) == 0, what="the killed runner's session to end")
    line = assert_refused_until_repair(project, mysql_url)
    assert "killed?" in line
    assert counts(mysql_url) == {REVISION: 1}


@pytest.mark.mysql
def test_mariadb_transactional_failure_needs_no_repair(project, mysql_url, mariadb_chain):
    """A revision that committed nothing on its own (data only) was rolled back: no row."""
    mariadb_chain.add(REVISION, "data only", 'op.execute("SELECT * FROM no_such_table")')
    line = assert_one_line_error(project.invoke("dev.upgrade"), ExitCode.FAILED, REVISION)
    assert "repair" not in line
    assert counts(mysql_url) == {}
    path = next(mariadb_chain.scripts.versions.glob(f"{REVISION}_*.py"))
    path.write_text(path.read_text().replace("no_such_table", "applied"))
    assert_ok(project.invoke("dev.upgrade"))
    assert counts(mysql_url) == {REVISION: 1}


def test_repair_without_a_failed_revision_is_bad_input(project, tmp_path):
    project.setenv("DATABASE_URL_DEVELOPMENT", f"sqlite:///{tmp_path / 'dev.sqlite3'}")
    chain = empty_chain(project.tmp / "scripts").use(project)
    assert_ok(project.invoke("dev.upgrade"))
    nothing = project.invoke("dev.repair", "-r", chain.head, "--applied", "--yes")
    assert_one_line_error(nothing, ExitCode.USAGE, "no unfinished run")
    both = project.invoke("dev.repair", "-r", chain.head, "--applied", "--reverted", "--yes")
    assert_one_line_error(both, ExitCode.USAGE, "one of --accept-edit, --applied or --reverted")


# --- PostgreSQL: an autocommit block ----------------------------------------------------------


def waiting_on_advisory(pg_server, url: str) -> int:  # type: ignore[no-untyped-def]
    """Sessions of the test database blocked on an advisory lock (the revision at the gate).
    Matching the query text would also count the progress row, which quotes the statement."""
    with pg_server.connect() as connection:
        return connection.execute(
            sqlalchemy.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = :name "
                "AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
            ),
            {"name": make_url(url).database},
        ).scalar()


@pytest.mark.postgres
def test_postgresql_lost_lock_in_an_autocommit_block_runs_once_and_refuses(
    project, pg_url, pg_server
):
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)
    chain = empty_chain(project.tmp / "scripts").use(project)
    assert_ok(project.invoke("dev.upgrade"))
    chain.add(
        REVISION,
        "autocommit",
        f"""
        op.execute("SET lock_timeout = 0")
        with op.get_context().autocommit_block():
            op.execute("CREATE TABLE first_half (id integer)")
            op.execute("SELECT pg_advisory_xact_lock({GATE})")
            op.execute("CREATE TABLE second_half (id integer)")
        """,
    )
    gate_engine = sqlalchemy.create_engine(pg_url, poolclass=sqlalchemy.pool.NullPool)
    gate = gate_engine.connect()
    gate.execute(sqlalchemy.text(f"SELECT pg_advisory_lock({GATE})"))
    first = spawn("dev.upgrade")
    second_result = None
    try:
        wait_until(lambda: waiting_on_advisory(pg_server, pg_url) == 1, what="the gate")
        pid = lock_backend_pid(pg_server, pg_url)
        assert pid is not None
        with pg_server.connect() as admin:
            admin.execute(sqlalchemy.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        second_result = finished(spawn("dev.upgrade"))
    finally:
        gate.close()
        gate_engine.dispose()
        first_result = finished(first)

    line = assert_one_line_error(first_result, ExitCode.LOCK_LOST, "migration lock lost")
    assert "rolled back" not in line and f"revision {REVISION} stopped part way" in line
    assert second_result is not None
    assert_one_line_error(second_result, ExitCode.REVISION_NOT_FINISHED, REVISION)
    assert counts(pg_url) == {REVISION: 1}
    assert "first_half" in tables(pg_url) and "second_half" not in tables(pg_url)
    assert_refused_until_repair(project, pg_url)
    execute(pg_url, "CREATE TABLE second_half (id integer)")
    assert_ok(project.invoke("dev.repair", "-r", REVISION, "--applied", "--yes"))
    assert_repair_audited(project, "applied")
    assert_ok(project.invoke("dev.upgrade"))
    assert counts(pg_url) == {REVISION: 1}


@pytest.mark.postgres
def test_postgresql_rerunnable_revision_runs_again_after_the_data_is_fixed(project, pg_url):
    """A revision of idempotent autocommit steps that declares `rerunnable = True` is not held
    back: fix the data, upgrade again, and it completes with no repair."""
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)
    chain = empty_chain(project.tmp / "scripts").use(project)
    chain.add(
        "f16000000000",
        "people",
        'op.execute("CREATE TABLE people (id integer, email text)")\n'
        "op.execute(\"INSERT INTO people VALUES (1, 'a'), (2, 'a')\")",
        record=False,
    )
    assert_ok(project.invoke("dev.upgrade"))
    chain.add(
        REVISION,
        "unique email",
        """
        with op.get_context().autocommit_block():
            op.execute("ALTER TABLE people ADD COLUMN IF NOT EXISTS nick text")
            op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_people_email_new")
            op.execute(
                "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ix_people_email_new "
                "ON people (email)"
            )
        """,
        record=False,
    )
    path = next(chain.scripts.versions.glob(f"{REVISION}_*.py"))
    path.write_text(path.read_text() + "\n\nrerunnable = True\n")
    assert_one_line_error(project.invoke("dev.upgrade"), ExitCode.FAILED, REVISION)
    behind = project.invoke("dev.current", "--check")
    assert behind.code == ExitCode.DIFFERENCES, behind.output
    assert f"revision {REVISION} did not finish" in behind.stdout
    assert "the next upgrade runs it again" in behind.stdout
    execute(pg_url, "UPDATE people SET email = 'b' WHERE id = 2")
    again = project.invoke("dev.upgrade")
    assert_ok(again)
    assert "re-runnable: running it again" in again.stdout
    assert scalar(pg_url, "SELECT version_num FROM alembic_version") == REVISION


@pytest.mark.postgres
def test_postgresql_a_statement_that_raised_committed_nothing(project, pg_url):
    """In an autocommit block a statement that fails is rolled back by the server: when it is the
    only one, the revision changed nothing and runs again with no repair; when an earlier one
    committed, only that one is listed as left behind."""
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)
    chain = empty_chain(project.tmp / "scripts").use(project)
    assert_ok(project.invoke("dev.upgrade"))
    chain.add(
        REVISION,
        "fails first",
        """
        with op.get_context().autocommit_block():
            op.execute("CREATE INDEX CONCURRENTLY ix_missing ON missing_table (id)")
        """,
        record=False,
    )

    failed = project.invoke("dev.upgrade")

    line = assert_one_line_error(failed, ExitCode.FAILED, REVISION, "missing_table")
    assert "dev.repair" not in line and "stopped part way" not in line
    execute(pg_url, "CREATE TABLE missing_table (id integer)")
    assert_ok(project.invoke("dev.upgrade"))
    assert scalar(pg_url, "SELECT version_num FROM alembic_version") == REVISION

    chain.add(
        "f17000000000",
        "fails second",
        """
        with op.get_context().autocommit_block():
            op.execute("CREATE TABLE kept_half (id integer)")
            op.execute("CREATE INDEX CONCURRENTLY ix_gone ON gone_table (id)")
        """,
        record=False,
    )
    second = project.invoke("dev.upgrade")
    line = assert_one_line_error(second, ExitCode.FAILED, "f17000000000", "1 of its statements")
    assert_one_line_error(project.invoke("dev.upgrade"), ExitCode.REVISION_NOT_FINISHED, "f170")
