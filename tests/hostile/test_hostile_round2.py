"""A hostile user's second pass over the merged product: one regression test per confirmed break.

Each test states the promise the README makes and reproduces a break the hostile pass found (all
31 are fixed: each failed before its fix). Every test runs the tasks the way a user does
(Invoke's CLI, in process or as a subprocess) on real databases.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from pathlib import Path

import pytest
import sqlalchemy

from tasks.core.errors import ExitCode
from tests.conftest import schema_snapshot
from tests.helpers import FIRST, HEAD, assert_one_line_error, prepare, venv_bin, version_rows
from tests.revision_chains import Chain, empty_chain, kill, scalar, spawn, wait_until

pytestmark = pytest.mark.hostile

TABLES = """
op.create_table(
    "users",
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(255), nullable=True),
)
op.create_table("memberships", sa.Column("id", sa.Integer, primary_key=True))
op.execute("INSERT INTO users (id, name) VALUES (1, 'ada')")
op.execute("INSERT INTO memberships (id) VALUES (1)")
"""


def at_tables(project, url: str) -> Chain:  # type: ignore[no-untyped-def]
    """Two tables with a row each, built through dev; production then points at the same URL."""
    chain = empty_chain(project.tmp / "scripts", counter=False).use(project)
    chain.add("f00000000001", "tables", TABLES, record=False)
    project.setenv("DATABASE_URL_DEVELOPMENT", url)
    result = project.invoke("dev.upgrade")
    assert result.code == ExitCode.OK, result.output
    project.monkeypatch.delenv("DATABASE_URL_DEVELOPMENT")
    project.setenv("DATABASE_URL_PRODUCTION", url)
    return chain


def assert_refused_and_unchanged(project, url: str) -> None:  # type: ignore[no-untyped-def]
    """`prod.upgrade --yes` without --allow-destructive refuses and changes nothing."""
    before = schema_snapshot(url)
    result = project.invoke("prod.upgrade", "--yes", "--no-backup")
    after = schema_snapshot(url)
    assert after == before, f"production changed (exit {result.code}):\n{result.output}"
    assert_one_line_error(result, ExitCode.REFUSED, "--allow-destructive")


def cli(project, *argv: str):  # type: ignore[no-untyped-def]
    """The installed `invoke` script, as a user's shell runs it."""
    return project.run(venv_bin("invoke"), *argv)


# --- 1. fleet.* does not run at all on the merged main --------------------------------------


def fleet_file(project, body: str) -> Path:  # type: ignore[no-untyped-def]
    path = project.tmp / "fleet.yaml"
    path.write_text("migrations:\n  fleets:\n    tenants:\n" + body)
    return path


@pytest.mark.postgres
def test_fleet_status_runs_on_a_configured_fleet(project, pg_url):
    prepare(project, pg_url)
    config = fleet_file(project, f"      urls: ['{pg_url}']\n")

    result = cli(project, "-f", str(config), "fleet.status")

    assert "Traceback" not in result.output, result.output
    assert result.code == ExitCode.OK, result.output
    assert "at head" in result.stdout


@pytest.mark.postgres
def test_fleet_plan_ends_without_a_traceback(project, pg_url):
    prepare(project, pg_url)
    config = fleet_file(project, f"      urls: ['{pg_url}']\n")

    result = cli(project, "-f", str(config), "fleet.plan")

    assert "Traceback" not in result.output, result.output
    assert result.code == ExitCode.OK, result.output


@pytest.mark.postgres
def test_fleet_urls_file_that_is_not_text_is_one_line(project, pg_url):
    urls = project.tmp / "tenants.txt"
    urls.write_bytes(b"\xff\xfe\x00not text\n")
    config = fleet_file(project, f"      urls_file: {urls}\n")

    result = cli(project, "-f", str(config), "fleet.status")

    assert_one_line_error(result, ExitCode.USAGE, "urls_file")


# --- 2. a revision that runs differently offline hides its SQL from the consent check ---------

OFFLINE_BRANCHES = {
    "is_offline_mode": """
        from alembic import context
        if not context.is_offline_mode():
            op.execute("DROP TABLE memberships")
    """,
    "as_sql": """
        if not op.get_context().as_sql:
            op.execute("DROP TABLE memberships")
    """,
    "get_bind": """
        if not op.get_context().as_sql:
            op.get_bind().exec_driver_sql("DROP TABLE memberships")
    """,
}


@pytest.mark.postgres
@pytest.mark.parametrize("body", OFFLINE_BRANCHES.values(), ids=OFFLINE_BRANCHES.keys())
def test_offline_branch_does_not_hide_a_drop_on_postgresql(project, pg_url, body):
    chain = at_tables(project, pg_url)
    chain.add("f00000000002", "hidden offline", body, record=False)

    assert_refused_and_unchanged(project, pg_url)


def test_offline_branch_does_not_hide_a_drop_on_sqlite(project, sqlite_url):
    chain = at_tables(project, sqlite_url)
    chain.add("f00000000002", "hidden offline", OFFLINE_BRANCHES["is_offline_mode"], record=False)

    assert_refused_and_unchanged(project, sqlite_url)


@pytest.mark.mysql
def test_offline_branch_does_not_hide_a_drop_on_mariadb(project, mysql_url):
    chain = at_tables(project, mysql_url)
    chain.add("f00000000002", "hidden offline", OFFLINE_BRANCHES["is_offline_mode"], record=False)

    assert_refused_and_unchanged(project, mysql_url)


# --- 3. dev.* on production's database through a multi-host URL --------------------------------


@pytest.mark.postgres
def test_dev_on_a_multi_host_url_that_reaches_production_is_refused(project, pg_url):
    prepare(project, pg_url)
    url = sqlalchemy.engine.make_url(pg_url)
    multi_host = (
        f"postgresql+psycopg2://{url.username}@nohost.invalid,{url.host}:{url.port}/{url.database}"
    )
    project.setenv("DATABASE_URL_PRODUCTION", pg_url)
    project.setenv("DATABASE_URL_DEVELOPMENT", multi_host)

    result = project.invoke("dev.stamp", "--rev", FIRST, "--yes")

    assert version_rows(schema_snapshot(pg_url)) == [HEAD], result.output
    assert_one_line_error(result, ExitCode.REFUSED, "DATABASE_URL_PRODUCTION")


# --- 4. statements the classifier passes that are not in its safe list -------------------------

MARIADB_UNSAFE = {
    # A full table copy under a lock; with ENGINE=BLACKHOLE (where the plugin is loaded) every
    # row is discarded, and MEMORY loses the rows at the next server restart.
    "engine-change": 'op.execute("ALTER TABLE memberships ENGINE=MEMORY")',
    # A full table copy holding an exclusive lock: writers stop for the whole copy.
    "algorithm-copy": (
        'op.execute("ALTER TABLE users ADD COLUMN nick int NULL, ALGORITHM=COPY, LOCK=EXCLUSIVE")'
    ),
    # Not a timeout: later INSERTs of this run may write orphans / silently truncated values.
    "foreign-key-checks-off": 'op.execute("SET FOREIGN_KEY_CHECKS=0")',
    "sql-mode-cleared": "op.execute(\"SET SESSION sql_mode=''\")",
}


@pytest.mark.mysql
@pytest.mark.parametrize("body", MARIADB_UNSAFE.values(), ids=MARIADB_UNSAFE.keys())
def test_mariadb_table_rebuilds_and_session_settings_need_consent(project, mysql_url, body):
    chain = at_tables(project, mysql_url)
    chain.add("f00000000002", "unsafe", body, record=False)

    result = project.invoke("prod.upgrade", "--yes", "--no-backup")

    assert_one_line_error(result, ExitCode.REFUSED, "--allow-destructive")
    assert version_rows(schema_snapshot(mysql_url)) == ["f00000000001"]


POSTGRES_SESSION = {
    # RESET ALL undoes the session's lock_timeout and statement_timeout guards for the rest of
    # the run; the README passes only SETs of timeouts without consent.
    "reset-all": 'op.execute("RESET ALL")',
    # Runs without consent; the run then fails writing alembic_version (exit 1, not 3).
    "search-path": "op.execute(\"SELECT set_config('search_path', 'nowhere', false)\")",
}


@pytest.mark.postgres
@pytest.mark.parametrize("body", POSTGRES_SESSION.values(), ids=POSTGRES_SESSION.keys())
def test_postgresql_session_settings_other_than_timeouts_need_consent(project, pg_url, body):
    chain = at_tables(project, pg_url)
    chain.add("f00000000002", "session", body, record=False)

    result = project.invoke("prod.upgrade", "--yes", "--no-backup")

    assert_one_line_error(result, ExitCode.REFUSED, "--allow-destructive")
    assert version_rows(schema_snapshot(pg_url)) == ["f00000000001"]


# --- 5. bad input that still ends in a traceback or "unexpected error" -------------------------

GARBLED = {
    "invalid-yaml": b"migrations: {owners: [\n",
    "not-utf-8": b"\xff\xfe garbage",
    "list-for-mapping": b"migrations:\n  - a\n",
    "mapping-for-text": b"migrations:\n  log_file: {a: 1}\n",
    "top-level-list": b"- 1\n",
}


@pytest.mark.parametrize("content", GARBLED.values(), ids=GARBLED.keys())
def test_garbled_configuration_file_is_one_line(project, content):
    config = project.tmp / "garbled.yaml"
    config.write_bytes(content)

    result = cli(project, "-f", str(config), "dev.heads")

    assert_one_line_error(result, ExitCode.USAGE)


@pytest.mark.postgres
def test_audit_limit_out_of_range_is_bad_input(project, pg_url):
    prepare(project, pg_url)
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)

    result = project.invoke("dev.audit", "--limit", "99999999999999999999999")

    assert_one_line_error(result, ExitCode.USAGE, "--limit")


# --- 6. the source scan of a revision that cannot render offline fails open ---------------------

# The first line makes offline rendering fail (a read), so the source scan judges the revision.
READS_FIRST = 'n = op.get_bind().execute(sa.text("SELECT 1")).scalar()\n'
SCANNER_EVASIONS = {
    "from-import": "from alembic.op import drop_table as dt\ndt('memberships')",
    "exec": "exec(\"op.drop_table('memberships')\")",
    "dunder-import": "__import__('alembic').op.drop_table('memberships')",
    "importlib": "import importlib\n"
    "importlib.import_module('alembic.op').execute('DROP TABLE memberships')",
    "context-connection": "op.get_context().connection.exec_driver_sql('DROP TABLE memberships')",
}


@pytest.mark.postgres
@pytest.mark.parametrize("body", SCANNER_EVASIONS.values(), ids=SCANNER_EVASIONS.keys())
def test_source_scan_needs_consent_for_what_it_cannot_recognise(project, pg_url, body):
    chain = at_tables(project, pg_url)
    chain.add("f00000000002", "scanned", READS_FIRST + body, record=False)

    assert_refused_and_unchanged(project, pg_url)


# --- 7. a production URL the tasks cannot use is "no match": dev.* then runs on it -------------

UNUSABLE_PRODUCTION = {
    # SQLAlchemy 2.1's own spelling for psycopg 3, not installed here
    "psycopg3-driver": "postgresql+psycopg",
    "pg8000-driver": "postgresql+pg8000",
}


@pytest.mark.postgres
@pytest.mark.parametrize("driver", UNUSABLE_PRODUCTION.values(), ids=UNUSABLE_PRODUCTION.keys())
def test_dev_on_production_named_with_another_driver_is_refused(project, pg_url, driver):
    prepare(project, pg_url)
    url = sqlalchemy.engine.make_url(pg_url)
    project.setenv("DATABASE_URL_PRODUCTION", url.set(drivername=driver).render_as_string(False))
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)

    result = project.invoke("dev.stamp", "--rev", FIRST, "--yes")

    assert version_rows(schema_snapshot(pg_url)) == [HEAD], result.output
    assert_one_line_error(result, ExitCode.REFUSED, "DATABASE_URL_PRODUCTION")


# --- 8. a stopped MariaDB revision does not name the DDL it left behind -------------------------


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


# --- 9. a no-op CREATE TABLE IF NOT EXISTS teaches the classifier a false column type -----------


@pytest.mark.postgres
def test_create_if_not_exists_does_not_prove_a_widening(project, pg_url):
    chain = at_tables(project, pg_url)
    body = (
        'op.execute("CREATE TABLE IF NOT EXISTS users (id int, name varchar(5))")\n'
        'op.execute("ALTER TABLE users ALTER COLUMN name TYPE varchar(6)")'
    )
    chain.add("f00000000002", "false widening", body, record=False)

    assert_refused_and_unchanged(project, pg_url)


# --- 10. Ctrl-C pressed repeatedly kills the run before its records are written -----------------


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
