"""Failure containment: each revision in its own transaction, so a failing one leaves the database
at the last good one and the error names it; PostgreSQL migration sessions run under the
environment's lock_timeout and statement_timeout."""

from __future__ import annotations

import json

import pytest
import sqlalchemy

from tasks.core.errors import ExitCode
from tests.conftest import schema_snapshot
from tests.helpers import assert_ok, assert_one_line_error, version_rows
from tests.revision_chains import counts, create_table, empty_chain


@pytest.fixture
def pg_dev(project, pg_url):
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)
    return pg_url


def config_file(project, **development: str):  # type: ignore[no-untyped-def]
    """An `invoke -f` file overriding the development environment's settings."""
    path = project.tmp / "override.yaml"
    lines = ["migrations:", "  environments:", "    development:"]
    lines += [f"      {key}: {value!r}" for key, value in development.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_a_failing_revision_in_the_middle_of_a_chain(project, dev):
    chain = empty_chain(project.tmp / "scripts").use(project)
    good = chain.add("b00000000001", "good", create_table("good"))
    bad = chain.add(
        "b00000000002",
        "breaks halfway",
        f"""
        {create_table("half")}
        op.execute("INSERT INTO good (id) VALUES (1)")
        op.execute("INSERT INTO no_such_table (id) VALUES (1)")
        """,
    )
    chain.add("b00000000003", "never reached", create_table("never"))

    result = project.invoke("dev.upgrade")

    line = assert_one_line_error(result, ExitCode.FAILED, f"revision {bad} failed", "no_such_table")
    assert "dev.upgrade" in line
    snapshot = schema_snapshot(dev)
    assert version_rows(snapshot) == [good]
    assert "half" not in snapshot and "never" not in snapshot  # nothing half-applied
    assert counts(dev) == {good: 1}
    engine = sqlalchemy.create_engine(dev)
    with engine.connect() as connection:
        assert connection.execute(sqlalchemy.text("SELECT count(*) FROM good")).scalar() == 0
    engine.dispose()
    assert f"applied {good}" in result.stdout
    finished = [record for record in project.log_records() if "outcome" in record][-1]
    assert finished["outcome"] == "failed"
    assert finished["revision_after"] == [good]
    assert bad in finished["error"]


def test_after_a_failure_the_fixed_chain_completes(project, dev):
    chain = empty_chain(project.tmp / "scripts").use(project)
    chain.add("b10000000001", "good", create_table("good"))
    broken = chain.add("b10000000002", "broken", 'op.execute("INSERT INTO nowhere VALUES (1)")')
    assert project.invoke("dev.upgrade").code == ExitCode.FAILED

    path = next(chain.scripts.versions.glob(f"{broken}_*.py"))
    path.write_text(path.read_text().replace("INSERT INTO nowhere VALUES (1)", "SELECT 1"))
    assert_ok(project.invoke("dev.upgrade"))

    assert version_rows(schema_snapshot(dev)) == [broken]
    assert counts(dev) == {"b10000000001": 1, broken: 1}


def test_a_failing_downgrade_names_the_revision(project, dev):
    chain = empty_chain(project.tmp / "scripts").use(project)
    first = chain.add("b20000000001", "first", create_table("first"), 'op.drop_table("first")')
    second = chain.add(
        "b20000000002", "second", create_table("second"), 'op.execute("DROP TABLE nowhere")'
    )
    assert_ok(project.invoke("dev.upgrade"))

    result = project.invoke("dev.downgrade", "--rev", "base", "--yes", "--no-backup")

    assert result.code == ExitCode.FAILED, result.output
    assert f"revision {second} failed" in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.output
    snapshot = schema_snapshot(dev)
    assert version_rows(snapshot) == [second]
    assert {"first", "second"} <= set(snapshot)
    assert counts(dev) == {first: 1, second: 1}


# --- PostgreSQL session settings ------------------------------------------------------------

RECORD_SETTINGS = """
op.execute(
    "CREATE TABLE seen AS SELECT current_setting('lock_timeout') AS lock_timeout, "
    "current_setting('statement_timeout') AS statement_timeout"
)
"""


def seen(url: str) -> tuple[str, str]:
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as connection:
        row = connection.execute(sqlalchemy.text("SELECT * FROM seen")).one()
    engine.dispose()
    return tuple(row)


@pytest.mark.postgres
def test_migrations_run_under_the_configured_timeouts(project, pg_dev):
    empty_chain(project.tmp / "scripts", counter=False).use(project).add(
        "c10000000001", "record the settings", RECORD_SETTINGS, record=False
    )

    assert_ok(project.invoke("dev.upgrade"))

    assert seen(pg_dev) == ("5s", "30min")  # invoke.yaml's development defaults


@pytest.mark.postgres
def test_timeouts_are_configurable_per_environment(project, pg_dev):
    empty_chain(project.tmp / "scripts", counter=False).use(project).add(
        "c20000000001", "record the settings", RECORD_SETTINGS, record=False
    )
    override = config_file(
        project, postgres_lock_timeout="1500ms", postgres_statement_timeout="2min"
    )

    assert_ok(project.invoke("-f", override, "dev.upgrade"))

    assert seen(pg_dev) == ("1500ms", "2min")


@pytest.mark.postgres
def test_an_invalid_timeout_is_a_configuration_error(project, pg_dev):
    empty_chain(project.tmp / "scripts").use(project)
    override = config_file(project, postgres_lock_timeout="soon")

    result = project.invoke("-f", override, "dev.upgrade")

    assert_one_line_error(result, ExitCode.USAGE, "postgres_lock_timeout", "soon")


@pytest.mark.postgres
def test_a_revision_blocked_by_a_busy_table_fails_fast(project, pg_dev):
    chain = empty_chain(project.tmp / "scripts").use(project)
    busy = chain.add("c30000000001", "busy table", create_table("busy"))
    assert_ok(project.invoke("dev.upgrade"))
    blocked = chain.add(
        "c30000000002", "alter the busy table", 'op.add_column("busy", sa.Column("x", sa.Integer))'
    )
    override = config_file(project, postgres_lock_timeout="1s")

    traffic = sqlalchemy.create_engine(pg_dev)
    with traffic.connect() as connection:
        connection.execute(sqlalchemy.text("LOCK TABLE busy IN ACCESS SHARE MODE"))
        result = project.invoke("-f", override, "dev.upgrade")
        connection.rollback()
    traffic.dispose()

    assert_one_line_error(result, ExitCode.FAILED, f"revision {blocked} failed", "lock timeout")
    snapshot = schema_snapshot(pg_dev)
    assert version_rows(snapshot) == [busy]
    assert [column[0] for column in snapshot["busy"]["columns"]] == ["id"]


@pytest.mark.postgres
def test_a_statement_past_statement_timeout_is_cancelled(project, pg_dev):
    chain = empty_chain(project.tmp / "scripts").use(project)
    slow = chain.add("c40000000001", "too slow", 'op.execute("SELECT pg_sleep(30)")')
    override = config_file(project, postgres_statement_timeout="500ms")

    result = project.invoke("-f", override, "dev.upgrade")

    assert_one_line_error(result, ExitCode.FAILED, f"revision {slow} failed", "statement timeout")
    assert version_rows(schema_snapshot(pg_dev)) == ["c0000000000c"]


@pytest.mark.postgres
def test_failed_run_is_audited_with_its_error(project, pg_dev):
    chain = empty_chain(project.tmp / "scripts").use(project)
    good = chain.add("c50000000001", "good", create_table("good"))
    bad = chain.add("c50000000002", "bad", 'op.execute("SELECT 1/0")')

    assert project.invoke("dev.upgrade").code == ExitCode.FAILED
    result = project.invoke("dev.audit", "--json")

    assert_ok(result)
    (row,) = json.loads(result.stdout)
    assert row["outcome"] == "failed"
    assert row["task"] == "dev.upgrade"
    assert row["revision_before"] is None or row["revision_before"] == ""
    assert row["revision_after"] == good
    assert bad in row["error"] and "division by zero" in row["error"]


@pytest.fixture
def dev(dev_on_both: str) -> str:
    return dev_on_both
