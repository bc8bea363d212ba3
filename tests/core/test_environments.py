"""Which database a task uses: process environment, `.env.<environment>`, `.env`, defaults, and
URLs in every spelling the issue promises (async drivers, postgres://, plain postgresql://)."""

from __future__ import annotations

import subprocess

import pytest

from tasks.core.environments import resolve_environment
from tasks.core.errors import ConfigError, ExitCode
from tasks.core.settings import load_project_settings
from tests.conftest import ROOT, schema_snapshot
from tests.helpers import (
    APP_TABLES,
    HEAD,
    assert_ok,
    assert_one_line_error,
    sqlite_url,
    table_names,
    version_rows,
)


@pytest.fixture
def files(project):
    """Three SQLite files, one per place a URL can come from."""
    return {name: project.tmp / f"{name}.sqlite3" for name in ("process", "specific", "shared")}


def upgraded(path) -> bool:
    return path.exists() and table_names(schema_snapshot(sqlite_url(path))) >= APP_TABLES


def test_process_environment_beats_both_files(project, files):
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url(files["process"]))
    (project.dotenv_dir / ".env.development").write_text(
        f"DATABASE_URL_DEVELOPMENT={sqlite_url(files['specific'])}\n"
    )
    (project.dotenv_dir / ".env").write_text(
        f"DATABASE_URL_DEVELOPMENT={sqlite_url(files['shared'])}\n"
    )

    assert_ok(project.invoke("dev.upgrade"))

    assert upgraded(files["process"])
    assert not files["specific"].exists() and not files["shared"].exists()


def test_environment_file_beats_shared_file(project, files):
    (project.dotenv_dir / ".env.development").write_text(
        f"DATABASE_URL_DEVELOPMENT={sqlite_url(files['specific'])}\n"
    )
    (project.dotenv_dir / ".env").write_text(
        f"DATABASE_URL_DEVELOPMENT={sqlite_url(files['shared'])}\n"
    )

    assert_ok(project.invoke("dev.upgrade"))

    assert upgraded(files["specific"])
    assert not files["shared"].exists()
    assert project.log_records()[-1]["database"] == sqlite_url(files["specific"])


def test_shared_file_is_the_last_resort(project, files):
    (project.dotenv_dir / ".env").write_text(
        f"# comment\nDATABASE_URL_DEVELOPMENT='{sqlite_url(files['shared'])}'\n"
    )

    assert_ok(project.invoke("dev.upgrade"))

    assert upgraded(files["shared"])


def test_another_environments_file_is_not_read(project, files):
    """`.env.staging` holds staging's URL; development must not pick it up from there."""
    (project.dotenv_dir / ".env.staging").write_text(
        f"DATABASE_URL_DEVELOPMENT={sqlite_url(files['specific'])}\n"
    )

    result = project.invoke("dev.upgrade")

    assert_one_line_error(result, ExitCode.USAGE, "DATABASE_URL_DEVELOPMENT")
    assert not files["specific"].exists()


def test_an_empty_process_variable_falls_through_to_the_files(project, files):
    project.setenv("DATABASE_URL_DEVELOPMENT", "")
    (project.dotenv_dir / ".env").write_text(
        f"DATABASE_URL_DEVELOPMENT={sqlite_url(files['shared'])}\n"
    )

    assert_ok(project.invoke("dev.upgrade"))

    assert upgraded(files["shared"])


def test_an_unparsable_dotenv_line_is_a_one_line_error(project, files):
    (project.dotenv_dir / ".env.development").write_text(
        f"DATABASE_URL_DEVELOPMENT={sqlite_url(files['specific'])}\nnot a binding 'x\n"
    )

    result = project.invoke("dev.upgrade")

    assert_one_line_error(result, ExitCode.USAGE, ".env.development", "line")
    assert not files["specific"].exists()


@pytest.mark.parametrize(
    ("collection", "variable", "environment"),
    [
        ("dev", "DATABASE_URL_DEVELOPMENT", "development"),
        ("staging", "DATABASE_URL_STAGING", "staging"),
        ("prod", "DATABASE_URL_PRODUCTION", "production"),
    ],
)
def test_missing_url_names_the_variable_and_the_files_searched(
    project, collection, variable, environment
):
    result = project.invoke(f"{collection}.current")

    line = assert_one_line_error(result, ExitCode.USAGE, variable, f".env.{environment}")
    assert ".env," in line or line.rstrip(")").endswith(".env")
    assert "process environment" in line


def test_local_defaults_to_a_git_ignored_sqlite_file_in_the_repository(project, tmp_path):
    """Resolved, not connected: the repository's own local.sqlite3 is never opened by tests."""
    project.monkeypatch.delenv("DATABASE_URL_LOCAL")
    project.monkeypatch.chdir(tmp_path)  # relative to the project, not to the shell

    environment = resolve_environment(load_project_settings(), "local")

    assert environment.source == "default"
    assert environment.dialect == "sqlite"
    assert environment.url.database == str(ROOT / "local.sqlite3")
    ignored = subprocess.run(["git", "check-ignore", "-q", "local.sqlite3"], cwd=ROOT, check=False)
    assert ignored.returncode == 0, "local.sqlite3 must be git-ignored"


def test_only_local_has_a_default(project):
    settings = load_project_settings()
    for name in ("development", "staging", "production"):
        with pytest.raises(ConfigError, match=settings.environment(name).url_variable):
            resolve_environment(settings, name, environ={})


def test_relative_sqlite_urls_are_anchored_at_the_project(project, tmp_path):
    project.monkeypatch.chdir(tmp_path)
    environment = resolve_environment(
        load_project_settings(), "development", {"DATABASE_URL_DEVELOPMENT": "sqlite:///x.db"}
    )
    assert environment.url.database == str(ROOT / "x.db")


def test_sqlite_aiosqlite_runs_on_the_sync_driver(project):
    path = project.tmp / "async.sqlite3"
    project.setenv("DATABASE_URL_DEVELOPMENT", f"sqlite+aiosqlite:///{path}")

    assert_ok(project.invoke("dev.upgrade"))

    assert upgraded(path)


@pytest.mark.postgres
@pytest.mark.parametrize(
    "scheme", ["postgresql+asyncpg", "postgres", "postgresql", "postgresql+psycopg_async"]
)
def test_postgresql_spellings_run_on_psycopg2(project, pg_url, scheme):
    """SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3, which the project does not install."""
    _driver, rest = pg_url.split("://", 1)
    project.setenv("DATABASE_URL_DEVELOPMENT", f"{scheme}://{rest}")

    assert_ok(project.invoke("dev.upgrade"))

    snapshot = schema_snapshot(pg_url)
    assert table_names(snapshot) >= APP_TABLES
    assert version_rows(snapshot) == [HEAD]
    assert project.log_records()[-1]["database"].startswith("postgresql+psycopg2://")


@pytest.mark.mysql
@pytest.mark.parametrize("scheme", ["mysql+aiomysql", "mysql+asyncmy"])
def test_async_mysql_urls_run_on_pymysql(project, mysql_url, scheme):
    _driver, rest = mysql_url.split("://", 1)
    project.setenv("DATABASE_URL_DEVELOPMENT", f"{scheme}://{rest}")

    assert_ok(project.invoke("dev.upgrade"))

    snapshot = schema_snapshot(mysql_url)
    assert table_names(snapshot) >= APP_TABLES
    assert version_rows(snapshot) == [HEAD]
    assert project.log_records()[-1]["database"].startswith("mysql+pymysql://")


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "postgresql://user:pw@host:notaport/db",
        "://missing-driver",
        "postgresql://u:p@[::1/db",
    ],
)
def test_malformed_url_is_a_one_line_usage_error(project, url):
    project.setenv("DATABASE_URL_DEVELOPMENT", url)

    result = project.invoke("dev.current")

    assert_one_line_error(result, ExitCode.USAGE, "DATABASE_URL_DEVELOPMENT")


def test_unknown_driver_is_a_one_line_usage_error(project):
    project.setenv("DATABASE_URL_DEVELOPMENT", "nosuchdb://user:hunter22@host/db")

    result = project.invoke("dev.current")

    assert_one_line_error(result, ExitCode.USAGE, "DATABASE_URL_DEVELOPMENT", "nosuchdb")
    assert "hunter22" not in result.output


def test_stale_environment_variable_does_not_redirect_a_task(project):
    """ENVIRONMENT=production left in the shell: `invoke dev.upgrade` still means development."""
    dev, prod = project.tmp / "dev.sqlite3", project.tmp / "prod.sqlite3"
    project.setenv("ENVIRONMENT", "production")
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url(dev))
    project.setenv("DATABASE_URL_PRODUCTION", sqlite_url(prod))

    assert_ok(project.invoke("dev.upgrade"))

    assert upgraded(dev)
    assert not prod.exists()
    record = project.log_records()[-1]
    assert record["environment"] == "development"
    assert record["task"] == "dev.upgrade"


def test_stale_environment_variable_with_no_production_url(project):
    """Even when ENVIRONMENT names an environment that has no URL at all."""
    dev = project.tmp / "dev.sqlite3"
    project.setenv("ENVIRONMENT", "production")
    project.setenv("DATABASE_URL_DEVELOPMENT", sqlite_url(dev))

    assert_ok(project.invoke("dev.upgrade"))
    assert upgraded(dev)


def test_renamed_url_variable_through_invoke_configuration(project, tmp_path):
    """Variable names are configuration: `invoke -f other.yaml` renames development's."""
    path = project.tmp / "renamed.sqlite3"
    config = tmp_path / "other.yaml"
    config.write_text(
        "migrations:\n  environments:\n    development:\n      url_variable: MY_DEV_DB\n"
    )
    project.setenv("MY_DEV_DB", sqlite_url(path))

    assert_ok(project.invoke("-f", str(config), "dev.upgrade"))

    assert upgraded(path)


@pytest.mark.parametrize(
    ("url", "module"),
    [
        ("postgresql+psycopg://app:hunter22@127.0.0.1/db", "psycopg"),
        ("postgresql+pg8000://app@127.0.0.1/db", "pg8000"),
    ],
)
def test_a_driver_the_project_does_not_install_is_a_one_line_usage_error(project, url, module):
    """Spelled out explicitly, a driver that is not installed is configuration, not a crash."""
    project.setenv("DATABASE_URL_DEVELOPMENT", url)

    result = project.invoke("dev.current")

    line = assert_one_line_error(result, ExitCode.USAGE, "DATABASE_URL_DEVELOPMENT", module)
    assert "unexpected" not in line
    assert "hunter22" not in result.output
