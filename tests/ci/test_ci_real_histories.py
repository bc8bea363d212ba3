"""`ci.check` for real histories (issue 8): `ci.dialects` decides where the stairway and models
checks run (default: the dialects of the shared environments' URLs), and `ci.since` marks
inherited history as trusted while heads and models are still checked for all of it.

Scripts are private copies (INVOKE_MIGRATIONS_ALEMBIC_INI) with revisions added on top of the
project's own two.
"""

from __future__ import annotations

import pytest

from tasks.core.errors import ExitCode
from tests.ci.test_ci_check import add_revision
from tests.helpers import HEAD, ScriptCopy, assert_ok, assert_one_line_error, copy_scripts

PG_ONLY = "dd44dd44dd44"
INHERITED = "ee55ee55ee55"
NEWER = "ff66ff66ff66"


@pytest.fixture
def scripts(project, tmp_path, pg_server) -> ScriptCopy:
    copy = copy_scripts(tmp_path / "scripts")
    project.setenv("INVOKE_MIGRATIONS_ALEMBIC_INI", str(copy.ini))
    project.setenv(
        "INVOKE_MIGRATIONS_CI_POSTGRES_URL", pg_server.url.render_as_string(hide_password=False)
    )
    return copy


def models_with_pg_only_table():
    """The project's models plus the table the PostgreSQL-only revision creates."""
    from sqlalchemy import Column, Integer, MetaData, Table, text
    from sqlalchemy.dialects.postgresql import JSONB

    from database.base import NAMING_CONVENTION
    from database.imports import import_all_models

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    for table in import_all_models().sorted_tables:
        table.to_metadata(metadata)
    Table(
        "settings_blob",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("data", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    )
    return metadata


@pytest.fixture
def pg_only_history(project, scripts) -> ScriptCopy:
    """A revision in raw PostgreSQL SQL (JSONB, a `::` cast) that SQLite cannot run."""
    add_revision(
        scripts,
        PG_ONLY,
        HEAD,
        """
        op.execute(
            "CREATE TABLE settings_blob (id serial PRIMARY KEY, "
            "data jsonb NOT NULL DEFAULT '{}'::jsonb)"
        )
        """,
        'op.execute("DROP TABLE settings_blob")',
    )
    project.setenv(
        "INVOKE_MIGRATIONS_METADATA", "tests.ci.test_ci_real_histories:models_with_pg_only_table"
    )
    return scripts


def test_without_environments_a_postgresql_only_history_fails_on_sqlite(project, pg_only_history):
    result = project.invoke("ci.check")

    assert result.code == ExitCode.CI_STAIRWAY, result.output
    assert f"FAILED stairway: sqlite: revision {PG_ONLY}: upgrade failed" in result.stdout
    assert "ok     stairway: postgresql" in result.stdout


def test_dialects_default_to_the_shared_environments(project, pg_only_history, pg_server):
    project.setenv("DATABASE_URL_PRODUCTION", pg_server.url.render_as_string(hide_password=False))
    project.setenv("DATABASE_URL_STAGING", pg_server.url.render_as_string(hide_password=False))

    result = project.invoke("ci.check")

    assert_ok(result)
    assert "ok     stairway: postgresql: 3 revisions" in result.stdout
    assert "ok     models: postgresql" in result.stdout
    assert "sqlite" not in result.stdout


def test_a_sqlite_environment_brings_the_sqlite_leg_back(project, pg_only_history, pg_server):
    project.setenv("DATABASE_URL_PRODUCTION", pg_server.url.render_as_string(hide_password=False))
    project.setenv("DATABASE_URL_DEVELOPMENT", f"sqlite:///{project.tmp / 'dev.sqlite3'}")

    result = project.invoke("ci.check")

    assert result.code == ExitCode.CI_STAIRWAY, result.output
    assert f"FAILED stairway: sqlite: revision {PG_ONLY}" in result.stdout


def test_explicit_dialects_win(project, pg_only_history):
    project.setenv("INVOKE_MIGRATIONS_CI_DIALECTS", "postgresql")

    result = project.invoke("ci.check")

    assert_ok(result)
    assert "stairway: sqlite" not in result.stdout


def add_inherited_history(scripts: ScriptCopy) -> None:
    """An inherited revision nobody will rewrite: a `pass` downgrade and a destructive upgrade."""
    add_revision(
        scripts, INHERITED, HEAD, 'op.execute("DROP TABLE IF EXISTS scratch_gone")', "pass"
    )


def test_since_trusts_older_revisions(project, scripts):
    add_inherited_history(scripts)
    project.setenv("INVOKE_MIGRATIONS_CI_DIALECTS", "sqlite")

    untrusted = project.invoke("ci.check")
    assert untrusted.code == ExitCode.CI_DOWNGRADES, untrusted.output
    assert f"FAILED downgrades: revision {INHERITED} has no real downgrade()" in untrusted.stdout
    assert f"FAILED lint: revision {INHERITED}" in untrusted.stdout

    project.setenv("INVOKE_MIGRATIONS_CI_SINCE", INHERITED[:6])  # a prefix, as Alembic takes
    trusted = project.invoke("ci.check")
    assert_ok(trusted)
    assert "ok     stairway: sqlite: 0 revisions up, down and up again (3 older" in trusted.stdout
    assert "ok     heads: 1 head " + INHERITED in trusted.stdout
    assert "ok     models: sqlite" in trusted.stdout


def test_since_still_checks_newer_revisions_heads_and_models(project, scripts):
    add_inherited_history(scripts)
    add_revision(scripts, NEWER, INHERITED, 'op.execute("SELECT 1")', "pass")
    scripts.add_branch("b0b0b0b0b0b0", down_revision=INHERITED)
    project.setenv("INVOKE_MIGRATIONS_CI_DIALECTS", "sqlite")
    project.setenv("INVOKE_MIGRATIONS_CI_SINCE", INHERITED)
    project.setenv("INVOKE_MIGRATIONS_METADATA", "tests.models_changed:metadata")

    result = project.invoke("ci.check")

    assert result.code == ExitCode.CI_HEADS, result.output
    assert "FAILED heads: 2 heads" in result.stdout
    assert f"FAILED downgrades: revision {NEWER} has no real downgrade()" in result.stdout
    assert f"revision {INHERITED} has no real downgrade" not in result.stdout
    assert "FAILED models: sqlite:" in result.stdout


@pytest.mark.parametrize(
    ("variable", "value", "needle"),
    [
        ("INVOKE_MIGRATIONS_CI_SINCE", "abcdef999999", "migrations.ci.since"),
        ("INVOKE_MIGRATIONS_CI_DIALECTS", "sqlite,mariadb", "migrations.ci.dialects"),
    ],
)
def test_bad_ci_settings_are_one_line(project, scripts, variable, value, needle):
    project.setenv(variable, value)

    assert_one_line_error(project.invoke("ci.check"), ExitCode.USAGE, needle)


def test_postgresql_dialect_without_a_server_is_one_line(project, scripts):
    project.setenv("INVOKE_MIGRATIONS_CI_POSTGRES_URL", "")
    project.setenv("INVOKE_MIGRATIONS_CI_DIALECTS", "postgresql")

    assert_one_line_error(project.invoke("ci.check"), ExitCode.USAGE, "ci.postgres_url")


MARIADB_URL = "mysql+pymysql://app@127.0.0.1:3306/app"


def test_a_mariadb_environment_is_noted_not_silently_skipped(project, scripts, pg_server):
    project.setenv("DATABASE_URL_STAGING", MARIADB_URL)
    project.setenv("DATABASE_URL_PRODUCTION", pg_server.url.render_as_string(hide_password=False))

    result = project.invoke("ci.check")

    assert_ok(result)
    assert "note: environments on mysql: ci.check has no throwaway server" in result.stdout
    assert "ok     stairway: postgresql" in result.stdout
    assert "stairway: sqlite" not in result.stdout


def test_only_mariadb_environments_fail_until_dialects_are_chosen(project, scripts):
    project.setenv("DATABASE_URL_PRODUCTION", MARIADB_URL)

    result = project.invoke("ci.check")

    assert result.code == ExitCode.CI_STAIRWAY, result.output
    assert "FAILED stairway: no dialect to build the history on" in result.stdout
    project.setenv("INVOKE_MIGRATIONS_CI_DIALECTS", "sqlite")
    assert_ok(project.invoke("ci.check"))


def test_since_schema_builds_a_history_that_cannot_run_from_empty(project, scripts, tmp_path):
    """An inherited revision that needs a table nothing in the history creates: ci.since alone
    cannot build the trusted start; ci.since_schema (the schema at that revision) can."""
    import sqlite3

    add_revision(
        scripts, INHERITED, HEAD, 'op.execute("INSERT INTO made_by_hand (id) VALUES (1)")', "pass"
    )
    project.setenv("INVOKE_MIGRATIONS_CI_DIALECTS", "sqlite")
    project.setenv("INVOKE_MIGRATIONS_CI_SINCE", INHERITED)
    alone = project.invoke("ci.check")
    assert alone.code == ExitCode.CI_STAIRWAY, alone.output
    assert f"trusted history up to {INHERITED} (ci.since) does not build" in alone.stdout

    built = tmp_path / "built.sqlite3"  # the schema the models describe, as a team would dump it
    project.setenv("DATABASE_URL_LOCAL", f"sqlite:///{built}")
    assert_ok(project.invoke("local.sync"))
    with sqlite3.connect(built) as connection:
        statements = [
            row[0]
            for row in connection.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL")
        ]
    schema = tmp_path / "schema.sql"
    schema.write_text(";\n".join(statements) + ";\n")
    project.setenv("INVOKE_MIGRATIONS_CI_SINCE_SCHEMA", str(schema))

    trusted = project.invoke("ci.check")

    assert_ok(trusted)
    assert "ok     stairway: sqlite: 0 revisions up, down and up again (3 older" in trusted.stdout
    assert "ok     models: sqlite: models match the migrations" in trusted.stdout


@pytest.mark.parametrize(
    ("since", "schema", "needle"),
    [("", "schema.sql", "needs migrations.ci.since"), (INHERITED, "missing.sql", "readable")],
)
def test_bad_since_schema_is_one_line(project, scripts, tmp_path, since, schema, needle):
    add_revision(scripts, INHERITED, HEAD, 'op.execute("SELECT 1")', "pass")
    (tmp_path / "schema.sql").write_text("SELECT 1;\n")
    project.setenv("INVOKE_MIGRATIONS_CI_SINCE", since)
    project.setenv("INVOKE_MIGRATIONS_CI_SINCE_SCHEMA", str(tmp_path / schema))

    assert_one_line_error(project.invoke("ci.check"), ExitCode.USAGE, needle)


@pytest.mark.mysql
def test_since_schema_on_mariadb_is_loaded_with_the_mariadb_client(
    project, scripts, tmp_path, mysql_url
):
    """A `mariadb-dump --no-data` file as ci.since_schema on the mysql dialect (issue 17: psql
    was run against port 3306); a file the server refuses is one line naming it."""
    import subprocess

    import sqlalchemy

    add_revision(
        scripts, INHERITED, HEAD, 'op.execute("INSERT INTO made_by_hand (id) VALUES (1)")', "pass"
    )
    project.setenv("DATABASE_URL_LOCAL", mysql_url)
    assert_ok(project.invoke("local.sync"))
    server = sqlalchemy.make_url(mysql_url)
    schema = tmp_path / "schema.sql"
    with schema.open("w") as out:
        dumped = subprocess.run(
            ["mariadb-dump", f"--host={server.host}", f"--port={server.port or 3306}",
             f"--user={server.username}", "--no-data", "--skip-comments", str(server.database)],
            stdout=out, stderr=subprocess.PIPE, text=True, check=False,
        )  # fmt: skip
    assert dumped.returncode == 0, dumped.stderr
    project.setenv("INVOKE_MIGRATIONS_CI_DIALECTS", "mysql")
    project.setenv(
        "INVOKE_MIGRATIONS_CI_MYSQL_URL",
        server.set(drivername="mysql", database="mysql").render_as_string(hide_password=False),
    )
    project.setenv("INVOKE_MIGRATIONS_CI_SINCE", INHERITED)
    project.setenv("INVOKE_MIGRATIONS_CI_SINCE_SCHEMA", str(schema))

    trusted = project.invoke("ci.check")

    assert_ok(trusted)
    assert "ok     models: mysql: models match the migrations" in trusted.stdout
    schema.write_text("CREATE TABLE broken (;\n")
    broken = project.invoke("ci.check")
    assert broken.code == ExitCode.CI_STAIRWAY, broken.output
    assert "schema.sql: ERROR 1064" in broken.stdout
