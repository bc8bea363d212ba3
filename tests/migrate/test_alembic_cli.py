"""Plain `alembic` from the repository root, through the same alembic/env.py: ENVIRONMENT
(default development) picks the database; current, history, downgrade -1 and base work."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT, schema_snapshot
from tests.helpers import (
    APP_TABLES,
    FIRST,
    HEAD,
    prepare,
    sqlite_url,
    table_names,
    venv_bin,
    version_rows,
)


@pytest.fixture
def dbs(project):
    """Development and staging SQLite files, both at head."""
    urls = {}
    for name in ("DEVELOPMENT", "STAGING"):
        urls[name] = prepare(project, sqlite_url(project.tmp / f"{name.lower()}.sqlite3"))
        project.setenv(f"DATABASE_URL_{name}", urls[name])
    return urls


def alembic(project, *argv: str):
    result = project.run(venv_bin("alembic"), *argv, timeout=120)
    assert "Traceback" not in result.output, result.output
    return result


def test_default_environment_is_development(project, dbs):
    staging_before = schema_snapshot(dbs["STAGING"])

    result = alembic(project, "downgrade", "-1")

    assert result.code == 0, result.output
    assert version_rows(schema_snapshot(dbs["DEVELOPMENT"])) == [FIRST]
    assert schema_snapshot(dbs["STAGING"]) == staging_before


def test_environment_variable_steers_plain_alembic(project, dbs):
    project.setenv("ENVIRONMENT", "staging")
    development_before = schema_snapshot(dbs["DEVELOPMENT"])

    downgraded = alembic(project, "downgrade", "-1")
    assert downgraded.code == 0, downgraded.output
    assert version_rows(schema_snapshot(dbs["STAGING"])) == [FIRST]

    current = alembic(project, "current")
    assert current.code == 0, current.output
    assert FIRST in current.stdout and HEAD not in current.stdout

    history = alembic(project, "history", "--indicate-current")
    assert history.code == 0, history.output
    assert any(FIRST in line and "(current)" in line for line in history.stdout.splitlines())
    assert HEAD in history.stdout

    base = alembic(project, "downgrade", "base")
    assert base.code == 0, base.output
    assert table_names(schema_snapshot(dbs["STAGING"])) == set()

    assert schema_snapshot(dbs["DEVELOPMENT"]) == development_before


def test_history_without_a_database(project):
    result = alembic(project, "history")

    assert result.code == 0, result.output
    assert f"{FIRST} -> {HEAD} (head)" in result.stdout
    assert f"<base> -> {FIRST}" in result.stdout


def test_upgrade_and_check_on_the_committed_history(project):
    """`alembic check`: the committed revisions build exactly the models."""
    url = sqlite_url(project.tmp / "fresh.sqlite3")
    project.setenv("DATABASE_URL_DEVELOPMENT", url)

    upgraded = alembic(project, "upgrade", "head")
    assert upgraded.code == 0, upgraded.output
    assert table_names(schema_snapshot(url)) >= APP_TABLES

    checked = alembic(project, "check")
    assert checked.code == 0, checked.output
    assert "No new upgrade operations detected" in checked.output


@pytest.mark.postgres
def test_check_on_postgresql(project, pg_url):
    project.setenv("DATABASE_URL_DEVELOPMENT", pg_url)

    assert alembic(project, "upgrade", "head").code == 0
    checked = alembic(project, "check")

    assert checked.code == 0, checked.output


def test_urls_come_from_dotenv_files_for_plain_alembic_too(project):
    url = sqlite_url(project.tmp / "from-file.sqlite3")
    (project.dotenv_dir / ".env.staging").write_text(f"DATABASE_URL_STAGING={url}\n")
    project.setenv("ENVIRONMENT", "staging")

    result = alembic(project, "upgrade", FIRST)

    assert result.code == 0, result.output
    assert version_rows(schema_snapshot(url)) == [FIRST]


def test_missing_url_for_plain_alembic(project):
    project.setenv("ENVIRONMENT", "production")

    result = alembic(project, "current")

    assert result.code != 0
    assert "DATABASE_URL_PRODUCTION is not set" in result.output


def test_async_url_for_plain_alembic(project):
    path = project.tmp / "async.sqlite3"
    project.setenv("DATABASE_URL_DEVELOPMENT", f"sqlite+aiosqlite:///{path}")

    result = alembic(project, "upgrade", "head")

    assert result.code == 0, result.output
    assert version_rows(schema_snapshot(sqlite_url(path))) == [HEAD]


def test_plain_alembic_from_another_directory(project, dbs, tmp_path):
    """`alembic -c <repo>/alembic.ini current` from elsewhere finds the project's modules."""
    result = project.run(
        "sh", "-c", f'cd "{tmp_path}" && "{venv_bin("alembic")}" -c "{ROOT}/alembic.ini" current'
    )

    assert result.code == 0, result.output
    assert HEAD in result.stdout
