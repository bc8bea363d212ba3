"""Revisions that try to slip a destructive or unsafe statement past the consent check.

A revision that runs differently offline, a MariaDB table rebuild or session setting, a
PostgreSQL session setting other than a timeout, code the source scan cannot recognise, and a
no-op CREATE TABLE IF NOT EXISTS that would teach the classifier a false column type: each one
makes `prod.upgrade --yes` refuse without --allow-destructive and change nothing.
"""

from __future__ import annotations

import pytest

from tasks.core.errors import ExitCode
from tests.conftest import schema_snapshot
from tests.helpers import assert_one_line_error, version_rows
from tests.revision_chains import Chain, empty_chain

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


@pytest.mark.postgres
def test_create_if_not_exists_does_not_prove_a_widening(project, pg_url):
    chain = at_tables(project, pg_url)
    body = (
        'op.execute("CREATE TABLE IF NOT EXISTS users (id int, name varchar(5))")\n'
        'op.execute("ALTER TABLE users ALTER COLUMN name TYPE varchar(6)")'
    )
    chain.add("f00000000002", "false widening", body, record=False)

    assert_refused_and_unchanged(project, pg_url)
