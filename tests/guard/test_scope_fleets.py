"""Scope covers every protected target (issue 16): a database that is only a fleet's target (no
environment's variable names it) is refused to `local.*`, and a protected fleet's to unprotected
environments, however the URL is spelled; the refusal is audited in that database. An owners
list that names nobody is an error, and a run refused for its unwritable log is audited too."""

from __future__ import annotations

import json

import pytest
import sqlalchemy

from tasks.core.errors import ExitCode
from tests.helpers import assert_ok, assert_one_line_error


def execute(url: str, *statements: str) -> None:
    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            for statement in statements:
                connection.execute(sqlalchemy.text(statement))
    finally:
        engine.dispose()


def tables(url: str) -> set[str]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return set(sqlalchemy.inspect(connection).get_table_names())
    finally:
        engine.dispose()


def refusals(url: str) -> list[tuple[str, str]]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sqlalchemy.text("SELECT task, outcome FROM migration_audit ORDER BY id")
            )
            return [(task, outcome) for task, outcome in rows]
    finally:
        engine.dispose()


def fleet_file(project, *, protected: bool, urls: list[str]):  # type: ignore[no-untyped-def]
    path = project.tmp / "fleet.yaml"
    fleet = {"urls": urls, "protected": "true" if protected else "false"}
    path.write_text(json.dumps({"migrations": {"fleets": {"tenants": fleet}}}))
    return str(path)


def spelled_otherwise(url: str) -> str:
    """The same database: `localhost` for 127.0.0.1, the default port left out, a query."""
    parsed = sqlalchemy.make_url(url)
    return f"postgresql://{parsed.username}@LocalHost/{parsed.database}?connect_timeout=3"


@pytest.fixture
def tenant(pg_url):  # type: ignore[no-untyped-def]
    execute(pg_url, "CREATE TABLE customers (id integer)")
    return pg_url


@pytest.mark.postgres
@pytest.mark.parametrize("argv", [("local.reset", "--yes"), ("local.sync",), ("local.backup",)])
def test_a_fleet_target_is_refused_to_local_tasks_and_audited(project, tenant, argv):
    config = fleet_file(project, protected=False, urls=[tenant])
    project.setenv("DATABASE_URL_LOCAL", spelled_otherwise(tenant))

    result = project.invoke("-f", config, *argv)

    line = assert_one_line_error(result, ExitCode.REFUSED, "fleet tenants", "refused")
    assert "://" not in line
    assert "customers" in tables(tenant)
    if argv[0] != "local.backup":  # reading is refused too, but changes nothing to audit
        assert refusals(tenant) == [(argv[0], "refused")]


@pytest.mark.postgres
def test_a_protected_fleet_target_is_refused_to_an_unprotected_environment(project, tenant):
    config = fleet_file(project, protected=True, urls=["${TENANT_URL}"])
    (project.dotenv_dir / ".env").write_text(f"TENANT_URL={tenant}\n")
    project.setenv("DATABASE_URL_DEVELOPMENT", spelled_otherwise(tenant))

    result = project.invoke("-f", config, "dev.downgrade", "--rev", "base", "--yes")

    assert_one_line_error(result, ExitCode.REFUSED, "fleet tenants", "protected")
    assert "customers" in tables(tenant)
    assert refusals(tenant) == [("dev.downgrade", "refused")]


@pytest.mark.postgres
def test_an_unprotected_fleet_target_is_still_open_to_development(project, tenant):
    """Same guard level (both shared): development may change it, as before."""
    config = fleet_file(project, protected=False, urls=[tenant])
    project.setenv("DATABASE_URL_DEVELOPMENT", tenant)
    result = project.invoke("-f", config, "dev.current")
    assert_ok(result)


def test_an_unreadable_fleet_url_counts_as_any_database(project, tmp_path):
    config = fleet_file(project, protected=True, urls=["not a url"])
    project.setenv("DATABASE_URL_LOCAL", f"sqlite:///{tmp_path / 'local.sqlite3'}")
    result = project.invoke("-f", config, "local.sync")
    assert_one_line_error(result, ExitCode.REFUSED, "fleets.tenants", "cannot be read")


@pytest.mark.parametrize("owners", ["", ",", " , ,"])
def test_an_owners_list_naming_nobody_is_an_error(project, tmp_path, owners):
    project.setenv("INVOKE_MIGRATIONS_OWNERS", owners)
    project.setenv("DATABASE_URL_DEVELOPMENT", f"sqlite:///{tmp_path / 'dev.sqlite3'}")
    result = project.invoke("dev.upgrade")
    assert_one_line_error(result, ExitCode.USAGE, "owners names nobody")
    assert not (tmp_path / "dev.sqlite3").exists()


@pytest.mark.postgres
def test_a_run_refused_for_its_unwritable_log_is_audited(project, pg_url):
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)
    blocked = project.tmp / "not-a-directory"
    blocked.write_text("a file where the log's folder should be")
    project.setenv("INVOKE_MIGRATIONS_LOG_FILE", str(blocked / "migrations.jsonl"))

    result = project.invoke("dev.upgrade")

    assert_one_line_error(result, ExitCode.USAGE, "cannot write the run log")
    assert refusals(pg_url) == [("dev.upgrade", "refused")]
    assert tables(pg_url) == {"migration_audit"}
